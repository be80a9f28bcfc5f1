"""``PDEBenchReader``: lazy, picklable reads of one sample (and time slice) of a file.

Spatial/temporal down-sampling follows PDEBench's loaders: ``[::reduced_resolution]`` on every
spatial axis and ``[::reduced_resolution_t]`` on time (never on the Darcy solution's single step).
The reader only ever reads the requested sample and slice, so files of any size are fine.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lightstack.physics.data.pdebench.errors import PDEBenchError
from lightstack.physics.data.pdebench.info import SPATIAL_AXES, FieldSource, PDEFileInfo
from lightstack.physics.data.pdebench.layouts import inspect_file


class PDEBenchReader:
    """Lazy, picklable reader of one file in any layout ``inspect_file`` knows.

    The HDF5 handle is opened on first use in the current process and reopened after a fork
    (DataLoader workers), and it is never pickled.
    """

    def __init__(
        self, path: str | Path, reduced_resolution: int = 1, reduced_resolution_t: int = 1
    ) -> None:
        for name, value in (
            ("reduced_resolution", reduced_resolution),
            ("reduced_resolution_t", reduced_resolution_t),
        ):
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.path = Path(path)
        self.reduced_resolution = int(reduced_resolution)
        self.reduced_resolution_t = int(reduced_resolution_t)
        self.raw_info = inspect_file(self.path)
        self.info = self._reduced_info(self.raw_info)
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _reduced_info(self, raw: PDEFileInfo) -> PDEFileInfo:
        rr = self.reduced_resolution
        coords = {axis: raw.coords[axis][::rr] for axis in SPATIAL_AXES[: raw.ndim]}
        if "t" in raw.coords:
            # One time per returned snapshot (PDEBench's extra trailing coordinate dropped).
            coords["t"] = raw.coords["t"][: raw.n_times][:: self.reduced_resolution_t]
        return replace(
            raw,
            n_times=len(self._raw_times()),
            spatial_shape=tuple(math.ceil(s / rr) for s in raw.spatial_shape),
            coords=coords,
        )

    def _raw_times(self) -> range:
        step = 1 if self.raw_info.layout == "darcy" else self.reduced_resolution_t
        return range(0, self.raw_info.n_times, step)

    # -- handle management
    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def __enter__(self) -> PDEBenchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.info.n_samples

    # -- reading
    def read(self, sample: int, t_slice: slice | None = None) -> np.ndarray:
        """Sample ``sample`` as float32 ``(T', *spatial', C)``; ``t_slice`` indexes reduced time."""
        index = self._check_sample(sample, self.info.sources[0].key_for(self.info.groups, 0))
        times = self._raw_times()[t_slice if t_slice is not None else slice(None)]
        if times.step < 0:
            raise ValueError(f"t_slice must have a positive step, got {t_slice}")
        shape = (len(times), *self.info.spatial_shape, len(self.info.channels))
        if len(times) == 0:
            return np.empty(shape, dtype=np.float32)
        tsl = slice(times.start, times.stop, times.step)
        parts = [self._read_source(source, index, tsl) for source in self.info.sources]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
        return out.reshape(shape)

    def _read_source(self, source: FieldSource, index: int, tsl: slice) -> np.ndarray:
        """``(T', *spatial', components)`` of one source, repeated along unstored axes."""
        varying = source.dim_varying or (True,) * self.info.ndim
        space = tuple(slice(None, None, self.reduced_resolution) for used in varying if used)
        selection = (
            *((index,) if source.sample_axis else ()),
            tsl,
            *space,
            *(slice(None),) * source.trailing_axes,
        )
        ds = self._h5()[source.key_for(self.info.groups, index)]
        values = np.asarray(ds[selection], dtype=np.float32)
        if source.trailing_axes == 0:
            values = values[..., None]
        sizes = list(zip(self.info.spatial_shape, varying, strict=True))
        stored = [size if used else 1 for size, used in sizes]
        values = values.reshape(values.shape[0], *stored, source.components)
        if all(varying):
            return values
        full = (values.shape[0], *self.info.spatial_shape, source.components)
        return np.broadcast_to(values, full)

    def read_coefficient(self, sample: int) -> np.ndarray:
        """Darcy coefficient field ``nu`` of ``sample``, float32 ``(*spatial', 1)``."""
        if self.info.layout != "darcy":
            raise PDEBenchError(self.path, "nu", "a Darcy file", f"layout '{self.info.layout}'")
        index = self._check_sample(sample, "nu")
        rr = self.reduced_resolution
        out = self._h5()["nu"][index, ::rr, ::rr]
        return np.asarray(out, dtype=np.float32)[..., None]

    def grid(self) -> np.ndarray:
        """Coordinates of the (reduced) grid, float32 ``(*spatial', d)``."""
        axes = [self.info.coords[a] for a in SPATIAL_AXES[: self.info.ndim]]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack(mesh, axis=-1).astype(np.float32)

    def _check_sample(self, sample: int, key: str) -> int:
        n = self.info.n_samples
        try:
            index = operator.index(sample)
        except TypeError:
            raise PDEBenchError(self.path, key, "an integer sample index", repr(sample)) from None
        if not 0 <= index < n:
            if self.info.layout == "seed_groups":
                key = f"{index:04d}/data"
            raise PDEBenchError(self.path, key, f"sample index in [0, {n})", index)
        return index


def sample_key(info: PDEFileInfo, sample: int) -> str:
    """The key(s) that hold ``sample``'s channels, for error messages (``"tensor"``,
    ``"density/pressure/Vx"``, ``"0003/data"``)."""
    return "/".join(source.key_for(info.groups, sample) for source in info.sources)
