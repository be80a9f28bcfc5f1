"""Writers of PDEBench's layouts: whole arrays (``write_*``) or block by block (``create_*``).

Every file is written to a temporary name and renamed when complete, so a crash never leaves
a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lightstack.core.io import atomic_path
from lightstack.physics.data.pdebench.errors import PDEBenchError
from lightstack.physics.data.pdebench.info import SPATIAL_AXES
from lightstack.physics.data.pdebench.pdebench_layouts import CFD_FIELDS


@contextlib.contextmanager
def _atomic_h5(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file written to a temporary beside ``path`` and renamed over it when complete.

    HDF5 reports a failed write (a full disk) as an ``OSError`` or, when the file is closed, a
    ``RuntimeError`` whose text carries the OS ``errno``; either becomes one ``OSError`` naming
    ``path`` (``[Errno 28] No space left on device: 'out.hdf5'``).
    """
    with atomic_path(path) as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                yield f
        except (OSError, RuntimeError) as exc:
            code = _h5_errno(exc)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(path)) from exc


def _h5_errno(exc: BaseException) -> int | None:
    """The OS error number behind an HDF5 write error, or None when it is not one."""
    if isinstance(exc, OSError) and exc.errno and "write" in str(exc):
        return exc.errno
    found = re.search(r"errno = (\d+)", str(exc))
    return int(found.group(1)) if found and int(found.group(1)) else None


def _write_attrs(f: h5py.File, attrs: Mapping[str, Any] | None) -> None:
    for key, value in (attrs or {}).items():
        f.attrs[key] = value


def _as_coord(path: str | Path, key: str, values: Any, lengths: Sequence[int]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 1 or arr.shape[0] not in lengths:
        want = " or ".join(f"({n},)" for n in lengths)
        raise PDEBenchError(path, key, f"shape {want}", arr.shape)
    return arr


def _as_array(
    path: str | Path, key: str, values: Any, shape: str, ndim: Sequence[int]
) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim not in ndim:
        raise PDEBenchError(path, key, f"shape {shape}", arr.shape)
    return arr


@contextlib.contextmanager
def create_1d(
    path: str | Path,
    n_samples: int,
    n_times: int,
    x: np.ndarray,
    t: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[h5py.Dataset]:
    """Create a 1D file atomically and yield its empty ``tensor`` to be filled in blocks."""
    x = _as_coord(path, "x-coordinate", x, [len(x)])
    t = _as_coord(path, "t-coordinate", t, [n_times + 1])
    with _atomic_h5(path) as f:
        tensor = f.create_dataset("tensor", shape=(n_samples, n_times, x.size), dtype="f4")
        f.create_dataset("x-coordinate", data=x)
        f.create_dataset("t-coordinate", data=t)
        _write_attrs(f, attrs)
        yield tensor


def write_1d(
    path: str | Path, u: np.ndarray, x: np.ndarray, t: np.ndarray, attrs: Mapping[str, Any] | None
) -> None:
    """Write ``u`` ``(N, T, X)``, ``x`` ``(X,)`` and ``t`` ``(T+1,)`` in PDEBench's 1D layout."""
    u = _as_array(path, "tensor", u, "(N, T, X)", [3])
    _as_coord(path, "x-coordinate", x, [u.shape[2]])
    with create_1d(path, u.shape[0], u.shape[1], x, t, attrs) as tensor:
        tensor[...] = u.astype(np.float32, copy=False)


def write_cfd(
    path: str | Path,
    fields: Mapping[str, np.ndarray],
    coords: Mapping[str, np.ndarray],
    t: np.ndarray,
    attrs: Mapping[str, Any] | None,
) -> None:
    """Write ``density``, ``pressure``, ``Vx`` (``Vy``, ``Vz``) ``(N, T, *spatial)`` each."""
    density = _as_array(path, "density", fields.get("density"), "(N, T, X[, Y[, Z]])", [3, 4, 5])
    d = density.ndim - 2
    names = CFD_FIELDS[: 2 + d]
    extra = sorted(set(fields) - set(names))
    if extra:
        raise PDEBenchError(path, extra[0], f"only the fields {list(names)} for {d}D", "extra")
    arrays = {}
    for name in names:
        if name not in fields:
            raise PDEBenchError(path, name, f"a field of shape {density.shape}", "missing")
        arrays[name] = np.asarray(fields[name])
        if arrays[name].shape != density.shape:
            raise PDEBenchError(
                path, name, f"shape {density.shape} like 'density'", arrays[name].shape
            )
    _, n_t, *spatial = density.shape
    coord_arrays = {}
    for axis, size in zip(SPATIAL_AXES, spatial, strict=False):
        if axis not in coords:
            raise PDEBenchError(path, f"{axis}-coordinate", f"shape ({size},)", "missing")
        coord_arrays[f"{axis}-coordinate"] = _as_coord(
            path, f"{axis}-coordinate", coords[axis], [size]
        )
    coord_arrays["t-coordinate"] = _as_coord(path, "t-coordinate", t, [n_t + 1])
    with _atomic_h5(path) as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr.astype(np.float32, copy=False))
        for key, arr in coord_arrays.items():
            f.create_dataset(key, data=arr)
        _write_attrs(f, attrs)


@contextlib.contextmanager
def create_darcy(
    path: str | Path,
    n_samples: int,
    x: np.ndarray,
    y: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[tuple[h5py.Dataset, h5py.Dataset]]:
    """Create a Darcy file atomically; yield its empty ``tensor`` and ``nu`` to be filled."""
    x = _as_coord(path, "x-coordinate", x, [len(x)])
    y = _as_coord(path, "y-coordinate", y, [len(y)])
    with _atomic_h5(path) as f:
        tensor = f.create_dataset("tensor", shape=(n_samples, 1, x.size, y.size), dtype="f4")
        nu = f.create_dataset("nu", shape=(n_samples, x.size, y.size), dtype="f4")
        f.create_dataset("x-coordinate", data=x)
        f.create_dataset("y-coordinate", data=y)
        _write_attrs(f, attrs)
        yield tensor, nu


def write_darcy(
    path: str | Path,
    solution: np.ndarray,
    nu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    attrs: Mapping[str, Any] | None,
) -> None:
    """Write the solution ``(N, 1, X, Y)`` and coefficient ``nu`` ``(N, X, Y)``."""
    solution = _as_array(path, "tensor", solution, "(N, 1, X, Y)", [4])
    n, one, nx, ny = solution.shape
    if one != 1:
        raise PDEBenchError(path, "tensor", "shape (N, 1, X, Y)", solution.shape)
    nu = np.asarray(nu)
    if nu.shape != (n, nx, ny):
        raise PDEBenchError(path, "nu", f"shape {(n, nx, ny)}", nu.shape)
    _as_coord(path, "x-coordinate", x, [nx])
    _as_coord(path, "y-coordinate", y, [ny])
    with create_darcy(path, n, x, y, attrs) as (tensor_ds, nu_ds):
        tensor_ds[...] = solution.astype(np.float32, copy=False)
        nu_ds[...] = nu.astype(np.float32, copy=False)


@contextlib.contextmanager
def create_seed_groups(
    path: str | Path,
    x: np.ndarray,
    y: np.ndarray | None,
    t: np.ndarray,
    attrs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
) -> Iterator[Callable[[np.ndarray], None]]:
    """Create a seed-group file atomically; yield ``add(data)`` that appends one sample.

    ``data`` is ``(T, X, Y, C)`` (or ``(T, X, C)`` when ``y`` is None); ``t`` has ``T`` entries.
    """
    grid = {"x": _as_coord(path, "grid/x", x, [len(x)])}
    if y is not None:
        grid["y"] = _as_coord(path, "grid/y", y, [len(y)])
    grid["t"] = _as_coord(path, "grid/t", t, [len(t)])
    spatial = tuple(grid[a].size for a in SPATIAL_AXES if a in grid)
    all_attrs = dict(attrs or {})
    if channels is not None:
        all_attrs["channels"] = ",".join(channels)
    with _atomic_h5(path) as f:
        _write_attrs(f, all_attrs)
        count = 0
        want = (grid["t"].size, *spatial)
        n_channels = len(channels) if channels is not None else None

        def add(data: np.ndarray) -> None:
            nonlocal count, n_channels
            name = f"{count:04d}"
            data = np.asarray(data, dtype=np.float32)
            if n_channels is None and data.ndim == len(want) + 1:
                n_channels = data.shape[-1]  # the first sample fixes C
            if data.shape != (*want, n_channels):
                shape = (*want, "C" if n_channels is None else n_channels)
                raise PDEBenchError(path, f"{name}/data", f"shape {shape}", data.shape)
            group = f.create_group(name)
            group.create_dataset("data", data=data)
            for axis, values in grid.items():
                group.create_dataset(f"grid/{axis}", data=values)
            count += 1

        yield add


def write_seed_groups(
    path: str | Path,
    data: Sequence[np.ndarray],
    x: np.ndarray,
    y: np.ndarray | None,
    t: np.ndarray,
    attrs: Mapping[str, Any] | None,
    channels: Sequence[str] | None = None,
) -> None:
    """Write one group per sample, each ``data`` ``(T, X, Y, C)`` (1D: ``(T, X, C)``)."""
    if not data:
        raise PDEBenchError(path, "0000/data", "at least one sample", "none")
    with create_seed_groups(path, x, y, t, attrs, channels) as add:
        for sample in data:
            add(sample)
