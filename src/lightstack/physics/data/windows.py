"""Trajectory windows from PDEBench files, and the LightningDataModule that serves them.

A training example is ``initial_step + horizon`` consecutive (strided) snapshots of one sample:
the input history (``data.initial_step`` snapshots, 1 by default) and ``horizon`` snapshots
after it, so the operator stage can learn one-step and multi-step rollouts from the same batch.
Files stay on disk: every worker opens its own lazy handle and reads only the window it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lightstack.core.resume import ResumableDataModule
from lightstack.physics.config import PhysicsDataConfig
from lightstack.physics.data.mixing import window_weights
from lightstack.physics.data.pdebench import (
    CORRUPT_FILE_ERRORS,
    PDEBenchError,
    PDEBenchReader,
    non_finite_attrs,
    sample_key,
)


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> Split:
    """Shuffle sample indices with ``seed`` and cut them into train/val/test (each non-empty)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(
            f"only {n} samples: cannot hold out {n_val} for validation and {n_test} for test"
        )
    return Split(
        train=np.sort(order[n_val + n_test :]),
        val=np.sort(order[:n_val]),
        test=np.sort(order[n_val : n_val + n_test]),
    )


def pdebench_split(n: int, test_ratio: float, seed_groups: bool) -> Split:
    """The split of PDEBench's loaders (``pdebench/models/fno/utils.py``), index for index.

    ``FNODatasetSingle`` (single-array files) tests on the first ``int(n * test_ratio)``
    samples and trains on the rest; ``FNODatasetMult`` (seed-group files) trains on the sorted
    seeds before ``int(n * (1 - test_ratio))`` and tests on the others. PDEBench's training
    loop validates on the test samples, so validation here is the test split too.
    """
    if seed_groups:
        cut = int(n * (1 - test_ratio))
        train, test = np.arange(cut), np.arange(cut, n)
    else:
        cut = int(n * test_ratio)
        test, train = np.arange(cut), np.arange(cut, n)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"data.split=pdebench with test_fraction {test_ratio} leaves {len(train)} training "
            f"and {len(test)} test samples of {n}: raise data.test_fraction or use more samples"
        )
    return Split(train=train, val=test, test=test)


class TrajectoryWindows(Dataset):
    """All windows of ``initial_step + horizon`` snapshots of the chosen samples of one file.

    With ``horizon=None`` each item is the whole trajectory (evaluation rollouts), which must
    hold at least one step after its ``initial_step`` input snapshots.
    """

    def __init__(
        self,
        reader: PDEBenchReader,
        samples: np.ndarray,
        horizon: int | None,
        params: np.ndarray,
        task_id: int = 0,
        initial_step: int = 1,
    ):
        self.reader = reader
        self.samples = np.asarray(samples)
        self.length = None if horizon is None else initial_step + horizon
        self.params = torch.as_tensor(params, dtype=torch.float32)
        self.task_id = task_id
        n_times = reader.info.n_times
        after = 1 if horizon is None else horizon
        needed = initial_step + after
        if n_times < needed:
            raise PDEBenchError(
                reader.info.path,
                "t-coordinate",
                f"at least {needed} time steps after reduction (data.initial_step={initial_step} "
                f"inputs and {after} to predict)",
                f"{n_times}",
            )
        self.starts = 1 if self.length is None else n_times - self.length + 1
        self.grid = torch.from_numpy(reader.grid())
        self.dt = time_step(reader)

    def __len__(self) -> int:
        return len(self.samples) * self.starts

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample, start = divmod(index, self.starts)
        stop = None if self.length is None else start + self.length
        fields = read_finite(self.reader, int(self.samples[sample]), slice(start, stop))
        return {
            "fields": torch.from_numpy(fields),
            "grid": self.grid,
            "params": self.params,
            "dt": torch.tensor(self.dt, dtype=torch.float32),
            "task": torch.tensor(self.task_id),
        }


def read_finite(reader: PDEBenchReader, sample: int, t_slice: slice | None = None) -> np.ndarray:
    """``reader.read`` that names the file, key and sample when the data is unreadable
    (a truncated file) or holds NaN/Inf."""
    info = reader.info
    key = sample_key(info, sample)
    try:
        fields = reader.read(sample, t_slice)
    except PDEBenchError:
        raise
    except CORRUPT_FILE_ERRORS as exc:
        raise PDEBenchError(
            info.path, key, "readable data", f"read of sample {sample} failed ({exc})"
        ) from exc
    if not np.isfinite(fields).all():
        raise PDEBenchError(info.path, key, "finite values", f"NaN/Inf in sample {sample}")
    return fields


def time_step(reader: PDEBenchReader) -> float:
    """Time between two (strided) snapshots; 0 for steady data sets such as Darcy."""
    t = reader.info.coords.get("t")
    return float(t[1] - t[0]) if t is not None and len(t) > 1 else 0.0


def file_params(reader: PDEBenchReader, keys: list[str]) -> np.ndarray:
    """PDE parameters of a file from its attributes, in ``keys`` order."""
    missing = [k for k in keys if k not in reader.info.attrs]
    if missing:
        raise PDEBenchError(
            reader.info.path,
            f"attrs/{missing[0]}",
            f"attributes {keys} (data.param_keys)",
            f"attributes {sorted(reader.info.attrs)}",
        )
    values = {k: reader.info.attrs[k] for k in keys}
    bad = non_finite_attrs(values)
    if bad:
        key = next(iter(bad))
        raise PDEBenchError(
            reader.info.path, f"attrs/{key}", "a finite number (data.param_keys)", bad[key]
        )
    return np.array([float(values[k]) for k in keys], dtype=np.float32)


class PDEDataModule(ResumableDataModule):
    """Train/val/test windows over one or more PDEBench files (one task per training file).

    The training loader resumes mid-epoch at the exact batch (``ResumableDataModule``).
    """

    def __init__(self, cfg: PhysicsDataConfig, horizon: int):
        super().__init__()
        if not cfg.train_files:
            raise ValueError("data.train_files is empty: name at least one PDEBench HDF5 file")
        self.cfg = cfg
        self.horizon = horizon
        # Training batch size; the batch-size tuner and OOM recovery change it between fits.
        self.batch_size = cfg.loader.batch_size
        self.task_names = cfg.task_names or [Path(f).stem for f in cfg.train_files]
        self.readers = [self._reader(f) for f in cfg.train_files]
        self._check_compatible()
        self.splits = [self._split(r) for r in self.readers]

    def _reader(self, path: str) -> PDEBenchReader:
        return PDEBenchReader(path, self.cfg.reduced_resolution, self.cfg.reduced_resolution_t)

    def _check_compatible(self) -> None:
        first = self.readers[0].info
        for reader in self.readers[1:]:
            info = reader.info
            if (info.spatial_shape, len(info.channels)) != (
                first.spatial_shape,
                len(first.channels),
            ):
                raise PDEBenchError(
                    reader.info.path,
                    "fields",
                    f"spatial shape {first.spatial_shape} and {len(first.channels)} channels "
                    f"like {first.path.name}",
                    f"{info.spatial_shape} and {len(info.channels)} channels",
                )

    def _split(self, reader: PDEBenchReader) -> Split:
        n = reader.info.n_samples
        if self.cfg.max_samples:
            n = min(n, self.cfg.max_samples)
        if self.cfg.split == "pdebench":
            seed_groups = reader.info.layout == "seed_groups"
            return pdebench_split(n, self.cfg.test_fraction, seed_groups)
        val_fraction = 0.0 if self.cfg.val_files else self.cfg.val_fraction
        test_fraction = 0.0 if self.cfg.test_files else self.cfg.test_fraction
        return split_indices(n, val_fraction, test_fraction, self.cfg.split_seed)

    # --- shape facts the model is built from -------------------------------------------------
    @property
    def channels(self) -> int:
        return len(self.readers[0].info.channels)

    @property
    def spatial_shape(self) -> list[int]:
        return list(self.readers[0].info.spatial_shape)

    @property
    def n_params(self) -> int:
        return len(self.cfg.param_keys)

    def field_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std over the first training samples of every file."""
        chunks = []
        for reader, split in zip(self.readers, self.splits, strict=True):
            for sample in split.train[: self.cfg.stats_samples]:
                u = read_finite(reader, int(sample))
                chunks.append(u.reshape(-1, u.shape[-1]))
        data = np.concatenate(chunks).astype(np.float64)
        std = np.maximum(data.std(axis=0), 1e-6)
        return torch.tensor(data.mean(axis=0), dtype=torch.float32), torch.tensor(
            std, dtype=torch.float32
        )

    # --- datasets ----------------------------------------------------------------------------
    def _windows(self, which: str, horizon: int | None) -> list[TrajectoryWindows]:
        extra_files = {"val": self.cfg.val_files, "test": self.cfg.test_files}.get(which, [])
        if extra_files:
            datasets = []
            for path in extra_files:
                reader = self._reader(path)
                samples = np.arange(reader.info.n_samples)[: self.cfg.max_samples]
                task = self._task_of(reader)
                datasets.append(
                    TrajectoryWindows(
                        reader,
                        samples,
                        horizon,
                        file_params(reader, self.cfg.param_keys),
                        task,
                        self.cfg.initial_step,
                    )
                )
            return datasets
        return [
            TrajectoryWindows(
                reader,
                getattr(split, which),
                horizon,
                file_params(reader, self.cfg.param_keys),
                task,
                self.cfg.initial_step,
            )
            for task, (reader, split) in enumerate(zip(self.readers, self.splits, strict=True))
        ]

    def _task_of(self, reader: PDEBenchReader) -> int:
        """Held-out files map to the training task with the same stem, else to task 0."""
        stem = reader.info.path.stem
        return self.task_names.index(stem) if stem in self.task_names else 0

    def windows(self, which: str, horizon: int | None) -> Dataset:
        return ConcatDataset(self._windows(which, horizon))

    def _loader(self, dataset: Dataset) -> DataLoader:
        """An evaluation loader: every window once, in order."""
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=False, **self.cfg.loader.worker_options()
        )

    def training_windows(self, horizon: int | None) -> Dataset:
        """Training windows of ``initial_step + horizon`` snapshots as training steps see them
        (a subclass may serve them in another form, e.g. cached latents)."""
        return self.windows("train", horizon)

    def train_dataloader(self) -> DataLoader:
        """Shuffled windows, or drawn by ``data.task_weights``; resumable mid-epoch. With
        ``data.resident`` the windows are cut from one tensor on the training device."""
        dataset = self.training_windows(self.horizon)
        weights = self.cfg.task_weights
        if weights is not None:
            weights = window_weights(dataset, self.task_names, weights)
        if self.cfg.resident:
            # imported here: resident.py builds on this module's TrajectoryWindows
            from lightstack.physics.data.resident import ResidentWindows, whole_batch

            device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
            resident = ResidentWindows(dataset, device)
            return self.resumable_loader(
                resident, self.batch_size, weights=weights, collate_fn=whole_batch
            )
        return self.resumable_loader(
            dataset, self.batch_size, weights=weights, **self.cfg.loader.worker_options()
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.windows("val", None))

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.windows("test", None))
