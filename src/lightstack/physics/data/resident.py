"""Training windows served from one tensor on the training device (``data.resident``).

For a training split that fits in device memory, the data loader's per-item reads, collation
and host-to-device copies cost more than a small model's step. ``ResidentWindows`` reads every
training trajectory once, keeps them on the device, and cuts a whole batch of windows there by
indexing. It is a map-style dataset with ``__getitems__``, so the training loader keeps its
``ResumableSampler`` (same order, task weights, mid-epoch resume, DDP split) and yields, for
the same sampler, exactly the batches the file-backed windows give.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from lightstack.physics.data.windows import TrajectoryWindows, read_finite


class ResidentWindows(Dataset):
    """The windows of ``windows`` (trajectory windows of one or more files), on ``device``."""

    def __init__(self, windows: ConcatDataset, device: torch.device | str):
        parts = list(windows.datasets)
        if not all(isinstance(p, TrajectoryWindows) and p.length is not None for p in parts):
            raise TypeError(
                "data.resident serves fixed-length trajectory windows; these training windows "
                f"are {sorted({type(p).__name__ for p in parts})}"
            )
        times = {p.reader.info.n_times for p in parts}
        if len(times) > 1:
            raise ValueError(
                "data.resident needs the same number of snapshots in every training file, got "
                f"{sorted(times)}"
            )
        self.device = torch.device(device)
        self.length = parts[0].length
        self.starts = parts[0].starts
        rows = [
            torch.from_numpy(read_finite(p.reader, int(sample)))
            for p in parts
            for sample in p.samples
        ]
        self.fields = torch.stack(rows).to(self.device)  # (N, T, *S, C)
        file_of_row = [i for i, p in enumerate(parts) for _ in p.samples]
        self.file_of_row = torch.tensor(file_of_row, device=self.device)
        self.grids = torch.stack([p.grid for p in parts]).to(self.device)
        self.params = torch.stack([p.params for p in parts]).to(self.device)
        self.dts = torch.tensor([p.dt for p in parts], dtype=torch.float32, device=self.device)
        self.tasks = torch.tensor([p.task_id for p in parts], device=self.device)
        self.offsets = torch.arange(self.length, device=self.device)

    def __len__(self) -> int:
        return len(self.fields) * self.starts

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """One batch (the dict a collated batch of ``TrajectoryWindows`` items is)."""
        index = torch.tensor(indices, device=self.device)
        row, start = index // self.starts, index % self.starts
        file = self.file_of_row[row]
        return {
            "fields": self.fields[row[:, None], start[:, None] + self.offsets],
            "grid": self.grids[file],
            "params": self.params[file],
            "dt": self.dts[file],
            "task": self.tasks[file],
        }

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def whole_batch(batch: Any) -> Any:
    """``collate_fn`` of a loader over ``ResidentWindows``: the batch is already built."""
    return batch
