"""What a data file holds (``PDEFileInfo``), where its channels come from (``FieldSource``),
and the checked look-ups every layout's inspection uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from lightstack.physics.data.pdebench.errors import PDEBenchError

T = TypeVar("T", h5py.Dataset, h5py.Group)

SPATIAL_AXES = ("x", "y", "z")
# In a FieldSource key, replaced by the sample's group name (PDEBench's seed-group files).
GROUP = "{group}"


@dataclass(frozen=True)
class FieldSource:
    """One dataset that supplies channels, indexed ``[sample,] time, *space, *components``.

    ``components`` channels come from the ``trailing_axes`` last axes (flattened, C order).
    Without ``sample_axis`` the dataset holds one sample (its key then names the sample's group
    through ``{group}``) or is shared by all samples. Spatial axes whose ``dim_varying`` entry is
    False are not stored and the values are repeated along them (The Well's convention).
    """

    key: str
    components: int = 1
    trailing_axes: int = 0
    sample_axis: bool = True
    dim_varying: tuple[bool, ...] | None = None

    def key_for(self, groups: Sequence[str], sample: int) -> str:
        if GROUP not in self.key:
            return self.key
        name = groups[sample] if 0 <= sample < len(groups) else ""
        return self.key.replace(GROUP, name).lstrip("/")


@dataclass(frozen=True, eq=False)
class PDEFileInfo:
    """What a file holds, read from its metadata only."""

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
    # Where the channels come from, in channel order.
    sources: tuple[FieldSource, ...] = field(default=())
    # Per-sample datasets that are not channels but are checked for NaN/Inf (e.g. Darcy's nu).
    aux_keys: tuple[str, ...] = field(default=())
    # Lines ``physics inspect`` prints about what the layout holds beyond the channels.
    notes: tuple[str, ...] = field(default=())

    @property
    def ndim(self) -> int:
        return len(self.spatial_shape)


def member(f: h5py.File | h5py.Group, path: Path, key: str, expected: str, kind: type[T]) -> T:
    """``f[key]``, which must be a ``kind`` (``h5py.Dataset`` or ``h5py.Group``), or a
    ``PDEBenchError`` saying what was expected there."""
    obj = f.get(key)
    if obj is None:
        raise PDEBenchError(path, key, expected, "missing")
    if not isinstance(obj, kind):
        raise PDEBenchError(path, key, expected, f"a {type(obj).__name__}")
    return obj


def dataset(f: h5py.File | h5py.Group, path: Path, key: str, expected: str) -> h5py.Dataset:
    """``f[key]`` as a dataset (see ``member``)."""
    return member(f, path, key, expected, h5py.Dataset)


def group(f: h5py.File | h5py.Group, path: Path, key: str, expected: str) -> h5py.Group:
    """``f[key]`` as a group (see ``member``)."""
    return member(f, path, key, expected, h5py.Group)


def coordinate(
    f: h5py.File | h5py.Group, path: Path, key: str, lengths: Sequence[int], what: str
) -> np.ndarray:
    """Read a 1-D coordinate whose length must be one of ``lengths``."""
    want = " or ".join(f"({n},)" for n in lengths)
    ds = dataset(f, path, key, f"a coordinate of shape {want} {what}")
    if ds.ndim != 1 or ds.shape[0] not in lengths:
        raise PDEBenchError(path, key, f"shape {want} {what}", ds.shape)
    return np.asarray(ds[()])


def require_shape(
    path: Path, key: str, ds: h5py.Dataset, shape: tuple[int, ...], what: str
) -> None:
    if ds.shape != shape:
        raise PDEBenchError(path, key, f"shape {shape} {what}", ds.shape)


def read_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """HDF5 attributes as plain Python values (bytes decoded, one-element arrays unwrapped)."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        out[key] = plain(value)
    return out


def plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return plain(value.item())
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def channel_names(attrs: Mapping[str, Any], n: int) -> tuple[str, ...]:
    """Files that carry no channel names get ``u`` (one channel) or ``u0, u1, ...``; ours store
    them in the ``channels`` attr."""
    names = attrs.get("channels")
    if isinstance(names, str) and len(names.split(",")) == n:
        return tuple(names.split(","))
    return ("u",) if n == 1 else tuple(f"u{i}" for i in range(n))


def unit_cell_centres(n: int) -> np.ndarray:
    """Cell centres of ``n`` equal cells on ``[0, 1)``, for files that store no coordinates."""
    return ((np.arange(n) + 0.5) / n).astype(np.float32)
