"""Read, write and validate PDEBench-format HDF5 files.

The four layouts PDEBench ships (key names, shapes and dtypes as its own data-generation and
loading code uses them):

``1d_tensor``
    ``tensor`` ``(N, T, X)`` float32, ``x-coordinate`` ``(X,)``, ``t-coordinate`` ``(T+1,)``
    (PDEBench stores one time coordinate more than it stores snapshots); attrs such as ``Nu``,
    ``beta``, ``rho``.
``cfd``
    ``density``, ``pressure``, ``Vx`` (``Vy``, ``Vz``) each ``(N, T, X[, Y[, Z]])``, plus
    ``x-coordinate`` (``y-``, ``z-``) and ``t-coordinate``; attrs ``eta``, ``zeta``, ``M``.
``darcy``
    ``tensor`` ``(N, 1, X, Y)`` (solution), ``nu`` ``(N, X, Y)`` (coefficient field),
    ``x-coordinate``, ``y-coordinate``; attr ``beta`` (the constant forcing).
``seed_groups``
    one group per sample (``"0000"``, ``"0001"``, ...) holding ``data`` ``(T, X[, Y], C)`` and
    ``grid/x`` (``grid/y``), ``grid/t`` (``(T,)``).

Spatial/temporal down-sampling follows PDEBench's loaders: ``[::reduced_resolution]`` on every
spatial axis and ``[::reduced_resolution_t]`` on time (never on the Darcy solution's single step).
The reader only ever reads the requested sample and slice, so files of any size are fine.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lightstack.core.io import atomic_path

LAYOUTS = ("1d_tensor", "cfd", "darcy", "seed_groups")
CFD_FIELDS = ("density", "pressure", "Vx", "Vy", "Vz")
SPATIAL_AXES = ("x", "y", "z")
FILE_KEY = "(file)"
# What reading a file whose HDF5 structures are damaged raises (h5py, and names that are
# not UTF-8 and so come back as bytes).
CORRUPT_FILE_ERRORS = (OSError, RuntimeError, ValueError, KeyError, TypeError)
# Samples are scanned for NaN/Inf in blocks of about this many bytes.
_SCAN_BYTES = 64 * 2**20


class PDEBenchError(ValueError):
    """A file does not match the PDEBench layout; names the file, the key and what was expected."""

    def __init__(self, path: str | Path, key: str, expected: str, found: Any = None) -> None:
        self.path = Path(path)
        self.key = key
        self.expected = expected
        self.found = found
        message = f"{self.path}: key '{key}': expected {expected}"
        if found is not None:
            message += f", found {found}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.key, self.expected, self.found)


@dataclass(frozen=True, eq=False)
class PDEFileInfo:
    """What a PDEBench file holds, read from its metadata only."""

    path: Path
    layout: str
    n_samples: int
    n_times: int
    spatial_shape: tuple[int, ...]
    channels: tuple[str, ...]
    coords: dict[str, np.ndarray]
    attrs: dict[str, Any]
    # Seed-group names in sample order (seed_groups layout only).
    groups: tuple[str, ...] = field(default=())

    @property
    def ndim(self) -> int:
        return len(self.spatial_shape)


# ----------------------------------------------------------------------------- inspection


def inspect_file(path: str | Path) -> PDEFileInfo:
    """Validate the structure and shapes of ``path`` and describe it; reads no large array."""
    path = Path(path)
    with _open(path) as f:
        try:
            return _inspect(f, path)
        except PDEBenchError:
            raise
        except CORRUPT_FILE_ERRORS as exc:
            raise PDEBenchError(path, FILE_KEY, "a readable HDF5 file", f"damaged ({exc})") from exc


@contextlib.contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    if not path.exists():
        raise PDEBenchError(path, FILE_KEY, "an existing HDF5 file", "no such file")
    if not path.is_file():
        raise PDEBenchError(path, FILE_KEY, "an HDF5 file", "a directory or special file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise PDEBenchError(path, FILE_KEY, "an HDF5 file", f"unreadable ({exc})") from exc
    with f:
        yield f


def _inspect(f: h5py.File, path: Path) -> PDEFileInfo:
    keys = sorted(f.keys())
    attrs = _read_attrs(f.attrs)
    if "tensor" in keys:
        tensor = _dataset(f, path, "tensor", "a 3-D (N, T, X) or 4-D (N, 1, X, Y) dataset")
        if tensor.ndim == 3:
            return _inspect_1d(f, path, tensor, attrs)
        if tensor.ndim == 4:
            return _inspect_darcy(f, path, tensor, attrs)
        raise PDEBenchError(
            path, "tensor", "rank 3 (N, T, X) or rank 4 Darcy (N, 1, X, Y)", tensor.shape
        )
    if "density" in keys:
        return _inspect_cfd(f, path, attrs)
    groups = [k for k in keys if f.get(k, getclass=True) is h5py.Group]
    if groups:
        return _inspect_seed_groups(f, path, groups, attrs)
    raise PDEBenchError(
        path,
        "tensor",
        "a PDEBench layout: 'tensor' (1D or Darcy), 'density'/'pressure'/'Vx' (CFD) "
        "or seed groups '0000/data'",
        f"keys {keys}" if keys else "an empty file",
    )


def _dataset(f: h5py.File | h5py.Group, path: Path, key: str, expected: str) -> h5py.Dataset:
    obj = f.get(key)
    if obj is None:
        raise PDEBenchError(path, key, expected, "missing")
    if not isinstance(obj, h5py.Dataset):
        raise PDEBenchError(path, key, expected, f"a {type(obj).__name__}")
    return obj


def _coordinate(
    f: h5py.File | h5py.Group, path: Path, key: str, lengths: Sequence[int], what: str
) -> np.ndarray:
    """Read a 1-D coordinate whose length must be one of ``lengths``."""
    want = " or ".join(f"({n},)" for n in lengths)
    ds = _dataset(f, path, key, f"a coordinate of shape {want} {what}")
    if ds.ndim != 1 or ds.shape[0] not in lengths:
        raise PDEBenchError(path, key, f"shape {want} {what}", ds.shape)
    return np.asarray(ds[()])


def _inspect_1d(f: h5py.File, path: Path, tensor: h5py.Dataset, attrs: dict) -> PDEFileInfo:
    n, t, x = tensor.shape
    what = f"to match tensor {tensor.shape}"
    coords = {
        "x": _coordinate(f, path, "x-coordinate", [x], what),
        "t": _coordinate(f, path, "t-coordinate", [t + 1, t], what),
    }
    return PDEFileInfo(path, "1d_tensor", n, t, (x,), ("u",), coords, attrs)


def _inspect_darcy(f: h5py.File, path: Path, tensor: h5py.Dataset, attrs: dict) -> PDEFileInfo:
    n, one, x, y = tensor.shape
    if one != 1:
        raise PDEBenchError(path, "tensor", "Darcy shape (N, 1, X, Y)", tensor.shape)
    nu = _dataset(f, path, "nu", f"the Darcy coefficient (N, X, Y) = {(n, x, y)}")
    if nu.shape != (n, x, y):
        raise PDEBenchError(
            path, "nu", f"shape {(n, x, y)} to match tensor {tensor.shape}", nu.shape
        )
    what = f"to match tensor {tensor.shape}"
    coords = {
        "x": _coordinate(f, path, "x-coordinate", [x], what),
        "y": _coordinate(f, path, "y-coordinate", [y], what),
    }
    return PDEFileInfo(path, "darcy", n, 1, (x, y), ("u",), coords, attrs)


def _inspect_cfd(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    density = _dataset(f, path, "density", "a (N, T, X[, Y[, Z]]) dataset")
    if density.ndim not in (3, 4, 5):
        raise PDEBenchError(path, "density", "rank 3, 4 or 5 (N, T, X[, Y[, Z]])", density.shape)
    d = density.ndim - 2
    channels = CFD_FIELDS[: 2 + d]
    for key in channels[1:]:
        ds = _dataset(f, path, key, f"a dataset of shape {density.shape} like 'density'")
        if ds.shape != density.shape:
            raise PDEBenchError(path, key, f"shape {density.shape} like 'density'", ds.shape)
    n, t, *spatial = density.shape
    what = f"to match density {density.shape}"
    coords = {
        axis: _coordinate(f, path, f"{axis}-coordinate", [size], what)
        for axis, size in zip(SPATIAL_AXES, spatial, strict=False)
    }
    coords["t"] = _coordinate(f, path, "t-coordinate", [t + 1, t], what)
    return PDEFileInfo(path, "cfd", n, t, tuple(spatial), channels, coords, attrs)


def _inspect_seed_groups(f: h5py.File, path: Path, groups: list[str], attrs: dict) -> PDEFileInfo:
    key = f"{groups[0]}/data"
    data = _dataset(f, path, key, "a (T, X[, Y[, Z]], C) dataset")
    if data.ndim not in (3, 4, 5):
        raise PDEBenchError(path, key, "rank 3, 4 or 5 (T, X[, Y[, Z]], C)", data.shape)
    t, *spatial, c = data.shape
    for name in groups[1:]:
        other = _dataset(f, path, f"{name}/data", f"shape {data.shape} like '{key}'")
        if other.shape != data.shape:
            raise PDEBenchError(
                path, f"{name}/data", f"shape {data.shape} like '{key}'", other.shape
            )
    what = f"to match {key} {data.shape}"
    grid = f"{groups[0]}/grid"
    coords = {
        axis: _coordinate(f, path, f"{grid}/{axis}", [size], what)
        for axis, size in zip(SPATIAL_AXES, spatial, strict=False)
    }
    coords["t"] = _coordinate(f, path, f"{grid}/t", [t, t + 1], what)
    return PDEFileInfo(
        path,
        "seed_groups",
        len(groups),
        t,
        tuple(spatial),
        _channel_names(attrs, c),
        coords,
        attrs,
        tuple(groups),
    )


def _channel_names(attrs: Mapping[str, Any], n: int) -> tuple[str, ...]:
    """Seed-group files carry no channel names; ours store them in the ``channels`` attr."""
    names = attrs.get("channels")
    if isinstance(names, str) and len(names.split(",")) == n:
        return tuple(names.split(","))
    return ("u",) if n == 1 else tuple(f"u{i}" for i in range(n))


def _read_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = value.item() if value.size == 1 else value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


# ----------------------------------------------------------------------------- reading


class PDEBenchReader:
    """Lazy, picklable reader of one PDEBench file.

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
        layout = self.info.layout
        index = self._check_sample(sample, "tensor" if layout != "cfd" else "density")
        times = self._raw_times()[t_slice if t_slice is not None else slice(None)]
        if times.step < 0:
            raise ValueError(f"t_slice must have a positive step, got {t_slice}")
        shape = (len(times), *self.info.spatial_shape, len(self.info.channels))
        if len(times) == 0:
            return np.empty(shape, dtype=np.float32)
        tsl = slice(times.start, times.stop, times.step)
        space = (slice(None, None, self.reduced_resolution),) * self.info.ndim
        f = self._h5()
        if layout in ("1d_tensor", "darcy"):
            out = f["tensor"][(index, tsl, *space)][..., None]
        elif layout == "cfd":
            out = np.stack([f[key][(index, tsl, *space)] for key in self.info.channels], axis=-1)
        else:
            out = f[self.info.groups[index]]["data"][(tsl, *space, slice(None))]
        return np.asarray(out, dtype=np.float32).reshape(shape)

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


# ----------------------------------------------------------------------------- validation


def _data_keys(info: PDEFileInfo) -> list[str]:
    """The keys of the datasets that hold samples."""
    if info.layout == "1d_tensor":
        return ["tensor"]
    if info.layout == "darcy":
        return ["tensor", "nu"]
    if info.layout == "cfd":
        return list(info.channels)
    return [f"{g}/data" for g in info.groups]


def check_finite(path: str | Path, key: str | None = None, max_samples: int | None = None) -> None:
    """Scan the data for NaN/Inf, one block of samples at a time.

    ``key`` restricts the scan to one dataset (e.g. ``"tensor"``, ``"Vx"``, ``"0003/data"``);
    ``max_samples`` to the first samples. Raises :class:`PDEBenchError` naming the key and the
    first bad sample.
    """
    path = Path(path)
    info = inspect_file(path)
    limit = info.n_samples if max_samples is None else min(max_samples, info.n_samples)
    keys = _data_keys(info)
    if key is not None:
        if key not in keys:
            raise PDEBenchError(path, key, f"one of {keys}", "missing")
        keys = [key]
    with _open(path) as f:
        if info.layout != "seed_groups":
            for name in keys:
                _scan(path, name, f[name], limit)
            return
        wanted = set(keys)
        for sample, group in enumerate(info.groups[:limit]):
            name = f"{group}/data"
            if name in wanted and not np.isfinite(f[name][()]).all():
                raise PDEBenchError(path, name, "finite values", f"NaN/Inf in sample {sample}")


def non_finite_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric file attributes (PDE parameters such as ``Nu``) holding NaN/Inf."""
    bad = {}
    for key, value in attrs.items():
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
            bad[key] = value
    return bad


def _scan(path: Path, key: str, ds: h5py.Dataset, limit: int) -> None:
    per_sample = max(1, math.prod(ds.shape[1:]) * ds.dtype.itemsize)
    block = max(1, _SCAN_BYTES // per_sample)
    for start in range(0, limit, block):
        stop = min(start + block, limit)
        try:
            values = ds[start:stop]
        except CORRUPT_FILE_ERRORS as exc:
            found = f"damaged data in samples {start}..{stop - 1} ({exc})"
            raise PDEBenchError(path, key, "readable data", found) from exc
        finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if not finite.all():
            sample = start + int(np.argmin(finite))
            raise PDEBenchError(path, key, "finite values", f"NaN/Inf in sample {sample}")


# ----------------------------------------------------------------------------- writing


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
