"""Steady-state samples (PDEBench 2D Darcy: coefficient ``nu`` in, solution ``tensor`` out).

``PDEDataModule`` serves time windows; Darcy files hold one snapshot per sample, so this module
keeps its splitting, statistics and loaders and swaps the items: one (coefficient, solution)
pair per sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lightstack.physics.config import PhysicsDataConfig
from lightstack.physics.data.pdebench import PDEBenchError, PDEBenchReader
from lightstack.physics.data.windows import PDEDataModule, file_params


class SteadySamples(Dataset):
    """Items ``coefficient`` (*S, 1), ``solution`` (*S, C), ``grid``, ``params``, ``task``."""

    def __init__(
        self, reader: PDEBenchReader, samples: np.ndarray, params: np.ndarray, task_id: int = 0
    ):
        self.reader = reader
        self.samples = np.asarray(samples)
        self.params = torch.as_tensor(params, dtype=torch.float32)
        self.task_id = task_id
        self.grid = torch.from_numpy(reader.grid())

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = int(self.samples[index])
        return {
            "coefficient": torch.from_numpy(self.reader.read_coefficient(sample)),
            "solution": torch.from_numpy(self.reader.read(sample)[0]),
            "grid": self.grid,
            "params": self.params,
            "task": torch.tensor(self.task_id),
        }


class SteadyDataModule(PDEDataModule):
    """Train/val/test (coefficient, solution) pairs over Darcy-layout files."""

    def __init__(self, cfg: PhysicsDataConfig):
        super().__init__(cfg, horizon=0)
        for reader in self.readers:
            if reader.info.layout != "darcy":
                raise PDEBenchError(
                    reader.info.path,
                    "nu",
                    "a steady (Darcy layout) file: 'tensor' (N, 1, X, Y) and 'nu' (N, X, Y)",
                    f"layout '{reader.info.layout}'",
                )

    def coefficient_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the coefficient field over the first training samples of every file."""
        values = np.concatenate(
            [
                reader.read_coefficient(int(sample)).reshape(-1)
                for reader, split in zip(self.readers, self.splits, strict=True)
                for sample in split.train[: self.cfg.stats_samples]
            ]
        ).astype(np.float64)
        return (
            torch.tensor([values.mean()], dtype=torch.float32),
            torch.tensor([max(values.std(), 1e-6)], dtype=torch.float32),
        )

    def _windows(self, which: str, horizon: int | None) -> list[SteadySamples]:
        extra_files = {"val": self.cfg.val_files, "test": self.cfg.test_files}.get(which, [])
        if extra_files:
            readers = [self._reader(path) for path in extra_files]
            return [
                SteadySamples(
                    reader,
                    np.arange(reader.info.n_samples)[: self.cfg.max_samples],
                    file_params(reader, self.cfg.param_keys),
                    self._task_of(reader),
                )
                for reader in readers
            ]
        return [
            SteadySamples(
                reader, getattr(split, which), file_params(reader, self.cfg.param_keys), task
            )
            for task, (reader, split) in enumerate(zip(self.readers, self.splits, strict=True))
        ]
