"""``predictions.hdf5``: every evaluated trajectory, predicted and true, for outside tools.

Datasets ``pred`` and ``true`` are ``(N, T, *S, C)``, channels last, steps ``0..T-1`` with the
``initial_step`` given snapshots first (equal in both), as PDEBench's predictions hold them;
``x-coordinate`` (``y-``, ``z-``) and ``t-coordinate`` ``(T,)`` give the grid and times, ``task``
``(N,)`` the task index of each trajectory (names in the file attribute ``task_names``). PDEBench's
``metric_func`` scores it after moving time next to the channels:
``metric_func(pred.movedim(1, -2), true.movedim(1, -2), initial_step=initial_step)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import torch

from lightstack.core.io import atomic_path
from lightstack.physics.eval.rollout import BatchResult

AXES = ("x", "y", "z")


class PredictionFile:
    """Appends batches of trajectories to an open HDF5 file (see ``open_predictions``)."""

    def __init__(self, h5: h5py.File, t_coordinate: np.ndarray | None):
        self.h5 = h5
        self.t_coordinate = t_coordinate

    def append(self, result: BatchResult, batch: dict[str, torch.Tensor]) -> None:
        arrays = {
            "pred": result.prediction.float().cpu().numpy(),
            "true": batch["fields"].float().cpu().numpy(),
            "task": result.task.cpu().numpy().astype(np.int64),
        }
        if "pred" not in self.h5:
            self._create(arrays, batch)
        n = self.h5["pred"].shape[0]
        for name, array in arrays.items():
            dataset = self.h5[name]
            dataset.resize(n + len(array), axis=0)
            dataset[n:] = array

    def _create(self, arrays: dict[str, np.ndarray], batch: dict[str, torch.Tensor]) -> None:
        for name, array in arrays.items():
            self.h5.create_dataset(
                name,
                shape=(0, *array.shape[1:]),
                maxshape=(None, *array.shape[1:]),
                dtype=array.dtype,
                chunks=(1, *array.shape[1:]),
            )
        grid = batch["grid"][0].float().cpu().numpy()  # (*S, d)
        for axis in range(grid.shape[-1]):
            index = tuple(slice(None) if a == axis else 0 for a in range(grid.ndim - 1))
            self.h5.create_dataset(f"{AXES[axis]}-coordinate", data=grid[(*index, axis)])
        steps = arrays["pred"].shape[1]
        dt = float(batch["dt"][0])
        t = self.t_coordinate
        if t is None or len(t) < steps:
            t = np.arange(steps, dtype=np.float64) * dt
        self.h5.create_dataset("t-coordinate", data=np.asarray(t[:steps], dtype=np.float32))


@contextlib.contextmanager
def open_predictions(
    path: str | Path,
    task_names: list[str],
    initial_step: int,
    t_coordinate: np.ndarray | None = None,
) -> Iterator[PredictionFile]:
    """Write ``path`` atomically: it appears, complete, only when the block succeeds."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["task_names"] = list(task_names)
        h5.attrs["initial_step"] = initial_step
        yield PredictionFile(h5, t_coordinate)
