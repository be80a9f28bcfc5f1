"""PDEBench's four layouts, as its data-generation and loading code writes and reads them.

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
"""

from __future__ import annotations

from pathlib import Path

import h5py

from lightstack.physics.data.pdebench.errors import PDEBenchError
from lightstack.physics.data.pdebench.info import (
    GROUP,
    SPATIAL_AXES,
    FieldSource,
    PDEFileInfo,
    channel_names,
    coordinate,
    dataset,
)

CFD_FIELDS = ("density", "pressure", "Vx", "Vy", "Vz")


def inspect_tensor(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    """``tensor`` holds a 1D file's trajectories or the Darcy solution."""
    tensor = dataset(f, path, "tensor", "a 3-D (N, T, X) or 4-D (N, 1, X, Y) dataset")
    if tensor.ndim == 3:
        return _inspect_1d(f, path, tensor, attrs)
    if tensor.ndim == 4:
        return _inspect_darcy(f, path, tensor, attrs)
    raise PDEBenchError(
        path, "tensor", "rank 3 (N, T, X) or rank 4 Darcy (N, 1, X, Y)", tensor.shape
    )


def _inspect_1d(f: h5py.File, path: Path, tensor: h5py.Dataset, attrs: dict) -> PDEFileInfo:
    n, t, x = tensor.shape
    what = f"to match tensor {tensor.shape}"
    coords = {
        "x": coordinate(f, path, "x-coordinate", [x], what),
        "t": coordinate(f, path, "t-coordinate", [t + 1, t], what),
    }
    return PDEFileInfo(
        path, "1d_tensor", n, t, (x,), ("u",), coords, attrs, sources=(FieldSource("tensor"),)
    )


def _inspect_darcy(f: h5py.File, path: Path, tensor: h5py.Dataset, attrs: dict) -> PDEFileInfo:
    n, one, x, y = tensor.shape
    if one != 1:
        raise PDEBenchError(path, "tensor", "Darcy shape (N, 1, X, Y)", tensor.shape)
    nu = dataset(f, path, "nu", f"the Darcy coefficient (N, X, Y) = {(n, x, y)}")
    if nu.shape != (n, x, y):
        raise PDEBenchError(
            path, "nu", f"shape {(n, x, y)} to match tensor {tensor.shape}", nu.shape
        )
    what = f"to match tensor {tensor.shape}"
    coords = {
        "x": coordinate(f, path, "x-coordinate", [x], what),
        "y": coordinate(f, path, "y-coordinate", [y], what),
    }
    return PDEFileInfo(
        path,
        "darcy",
        n,
        1,
        (x, y),
        ("u",),
        coords,
        attrs,
        sources=(FieldSource("tensor"),),
        aux_keys=("nu",),
        notes=("coefficient: nu (N, X, Y), the steady-prior stage's input",),
    )


def inspect_cfd(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    density = dataset(f, path, "density", "a (N, T, X[, Y[, Z]]) dataset")
    if density.ndim not in (3, 4, 5):
        raise PDEBenchError(path, "density", "rank 3, 4 or 5 (N, T, X[, Y[, Z]])", density.shape)
    d = density.ndim - 2
    channels = CFD_FIELDS[: 2 + d]
    for key in channels[1:]:
        ds = dataset(f, path, key, f"a dataset of shape {density.shape} like 'density'")
        if ds.shape != density.shape:
            raise PDEBenchError(path, key, f"shape {density.shape} like 'density'", ds.shape)
    n, t, *spatial = density.shape
    what = f"to match density {density.shape}"
    coords = {
        axis: coordinate(f, path, f"{axis}-coordinate", [size], what)
        for axis, size in zip(SPATIAL_AXES, spatial, strict=False)
    }
    coords["t"] = coordinate(f, path, "t-coordinate", [t + 1, t], what)
    sources = tuple(FieldSource(key) for key in channels)
    return PDEFileInfo(path, "cfd", n, t, tuple(spatial), channels, coords, attrs, sources=sources)


def inspect_seed_groups(f: h5py.File, path: Path, groups: list[str], attrs: dict) -> PDEFileInfo:
    key = f"{groups[0]}/data"
    data = dataset(f, path, key, "a (T, X[, Y[, Z]], C) dataset")
    if data.ndim not in (3, 4, 5):
        raise PDEBenchError(path, key, "rank 3, 4 or 5 (T, X[, Y[, Z]], C)", data.shape)
    t, *spatial, c = data.shape
    for name in groups[1:]:
        other = dataset(f, path, f"{name}/data", f"shape {data.shape} like '{key}'")
        if other.shape != data.shape:
            raise PDEBenchError(
                path, f"{name}/data", f"shape {data.shape} like '{key}'", other.shape
            )
    what = f"to match {key} {data.shape}"
    grid = f"{groups[0]}/grid"
    coords = {
        axis: coordinate(f, path, f"{grid}/{axis}", [size], what)
        for axis, size in zip(SPATIAL_AXES, spatial, strict=False)
    }
    coords["t"] = coordinate(f, path, f"{grid}/t", [t, t + 1], what)
    source = FieldSource(f"{GROUP}/data", components=c, trailing_axes=1, sample_axis=False)
    return PDEFileInfo(
        path,
        "seed_groups",
        len(groups),
        t,
        tuple(spatial),
        channel_names(attrs, c),
        coords,
        attrs,
        tuple(groups),
        sources=(source,),
    )
