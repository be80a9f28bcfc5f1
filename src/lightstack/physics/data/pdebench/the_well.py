"""The Well's HDF5 layout (``docs/data_format.md`` of PolymathicAI/the_well).

Root attributes ``n_trajectories``, ``n_spatial_dims``, ``dataset_name`` and the simulation
parameters; groups ``dimensions`` (``time`` and one coordinate per name in its
``spatial_dims`` attribute), ``boundary_conditions``, ``scalars`` and ``t0_fields``,
``t1_fields``, ``t2_fields`` (scalar, vector and rank-2 tensor fields, named in each group's
``field_names`` attribute). A field is ``[N,] [T,] *space, *D^order``: the ``sample_varying``
and ``time_varying`` attributes say whether the first two axes exist and ``dim_varying``
which spatial axes are stored (values repeat along the others).

As The Well's own dataset does, the time-varying fields are the channels, in the order t0,
t1, t2 and by ``field_names``, a vector field ``v`` giving ``v_x``, ``v_y`` (tensors ``v_xx``,
``v_xy``, ...). Constant fields and boundary conditions are described, not model inputs; scalars
that are constant for the whole file become attributes (usable in ``data.param_keys``).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lightstack.physics.data.pdebench.errors import PDEBenchError
from lightstack.physics.data.pdebench.info import (
    FieldSource,
    PDEFileInfo,
    dataset,
    group,
    plain,
    read_attrs,
)

LAYOUT = "the_well"
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")


def matches(f: h5py.File) -> bool:
    return any(isinstance(f.get(name), h5py.Group) for name in FIELD_GROUPS)


def inspect(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    n = attrs.get("n_trajectories")
    if not isinstance(n, int) or n < 1:
        raise PDEBenchError(path, "attrs/n_trajectories", "a positive integer", repr(n))
    dims = group(f, path, "dimensions", "The Well's 'dimensions' group")
    names = [str(d) for d in _names(dims, path, "dimensions", "spatial_dims")]
    if not 1 <= len(names) <= 3:
        raise PDEBenchError(path, "dimensions/attrs/spatial_dims", "1 to 3 names", names)
    time = _axis(f, path, "time", n)
    coords = {axis: _axis(f, path, name, n) for axis, name in zip("xyz", names, strict=False)}
    spatial = tuple(len(coords[axis]) for axis in "xyz"[: len(names)])
    coords["t"] = time
    channels: list[str] = []
    sources: list[FieldSource] = []
    notes: list[str] = [f"spatial dims: {', '.join(names)}"]
    for order, group_name in enumerate(FIELD_GROUPS):
        fields = f.get(group_name)
        if not isinstance(fields, h5py.Group):
            continue
        for name in _names(fields, path, group_name, "field_names"):
            key = f"{group_name}/{name}"
            source = _field_source(f, path, key, order, (n, len(time), spatial))
            if source is None:
                notes.append(f"constant field {key} {f[key].shape}: not a model input")
                continue
            suffixes = ["".join(c) for c in itertools.product(names, repeat=order)]
            channels += [f"{name}_{s}" if s else str(name) for s in suffixes]
            sources.append(source)
    if not sources:
        raise PDEBenchError(path, "/".join(FIELD_GROUPS), "at least one time-varying field", "none")
    attrs = {**attrs, **_constant_scalars(f, path, notes)}
    notes += _boundaries(f, path)
    return PDEFileInfo(
        path,
        LAYOUT,
        n,
        len(time),
        spatial,
        tuple(channels),
        coords,
        attrs,
        sources=tuple(sources),
        notes=tuple(notes),
    )


def _field_source(
    f: h5py.File, path: Path, key: str, order: int, sizes: tuple[int, int, tuple[int, ...]]
) -> FieldSource | None:
    """Where a time-varying field's channels come from (None for a constant field), after
    checking its shape against its ``sample_varying``/``time_varying``/``dim_varying``."""
    n, n_times, spatial = sizes
    ds = dataset(f, path, key, f"a field named in {key.split('/')[0]}'s field_names")
    field_attrs = read_attrs(ds.attrs)
    flags = field_attrs.get("dim_varying", [True] * len(spatial))
    varying = tuple(bool(v) for v in (flags if isinstance(flags, list) else [flags]))
    per_sample = bool(field_attrs.get("sample_varying", True))
    per_time = bool(field_attrs.get("time_varying", True))
    shape = (
        *((n,) if per_sample else ()),
        *((n_times,) if per_time else ()),
        *(size for size, used in zip(spatial, varying, strict=False) if used),
        *(len(spatial),) * order,
    )
    if len(varying) != len(spatial) or ds.shape != shape:
        raise PDEBenchError(
            path,
            key,
            f"shape {shape} (sample_varying={per_sample}, "
            f"time_varying={per_time}, dim_varying={list(varying)})",
            ds.shape,
        )
    if not per_time:
        return None
    return FieldSource(key, len(spatial) ** order, order, per_sample, varying)


def _names(obj: h5py.Group, path: Path, key: str, attr: str) -> list[Any]:
    value = plain(obj.attrs.get(attr))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise PDEBenchError(path, f"{key}/attrs/{attr}", "a list of names", repr(value))
    return value


def _axis(f: h5py.File, path: Path, name: str, n: int) -> np.ndarray:
    """A coordinate ``(L,)``, or ``(N, L)`` when it varies per sample (the first is used)."""
    ds = dataset(f, path, f"dimensions/{name}", "a coordinate of shape (L,) or (N, L)")
    if ds.ndim == 1:
        return np.asarray(ds[()])
    if ds.ndim == 2 and ds.shape[0] == n:
        return np.asarray(ds[0])
    raise PDEBenchError(path, f"dimensions/{name}", f"shape (L,) or ({n}, L)", ds.shape)


def _constant_scalars(f: h5py.File, path: Path, notes: list[str]) -> dict[str, Any]:
    scalars = f.get("scalars")
    if not isinstance(scalars, h5py.Group):
        return {}
    out = {}
    for name in _names(scalars, path, "scalars", "field_names"):
        ds = dataset(f, path, f"scalars/{name}", "a scalar named in field_names")
        constant = not ds.attrs.get("sample_varying", False) and not ds.attrs.get(
            "time_varying", False
        )
        if constant and ds.size == 1:
            out[str(name)] = plain(np.asarray(ds[()]).reshape(-1)[0])
        else:
            notes.append(f"scalar scalars/{name} {ds.shape} varies: not a model input")
    return out


def _boundaries(f: h5py.File, path: Path) -> list[str]:
    bcs = group(f, path, "boundary_conditions", "The Well's 'boundary_conditions' group")
    lines = []
    for name in sorted(bcs.keys()):
        bc = read_attrs(bcs[name].attrs)
        lines.append(
            f"boundary {name}: {bc.get('bc_type', '?')} on {bc.get('associated_dims', '?')}"
        )
    return lines
