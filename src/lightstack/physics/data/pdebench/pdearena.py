"""PDEArena's 2D Navier-Stokes files (``NavierStokes2D_<mode>_<seed>_<buoyancy>_<n>.h5``).

One group per file, named for its split (``train``, ``valid`` or ``test``), holding ``u``
(the advected scalar), ``vx``, ``vy`` each ``(N, T, X, Y)``, ``t`` ``(N, T)``, ``x`` ``(N, X)``,
``y`` ``(N, Y)``, ``dt`` ``(N,)`` and ``buo_y`` ``(N,)`` (the buoyancy), as PDEArena's
``pdedatagen`` writes them. The channels are ``u``, ``vx``, ``vy`` in that order; coordinates
come from the first sample. A buoyancy shared by all samples becomes the attribute ``buo_y``
(usable in ``data.param_keys``); one that varies per sample is described but not a model input.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from lightstack.physics.data.pdebench.errors import PDEBenchError
from lightstack.physics.data.pdebench.info import (
    FieldSource,
    PDEFileInfo,
    dataset,
    require_shape,
)

LAYOUT = "pdearena"
SPLITS = ("train", "valid", "test")
CHANNELS = ("u", "vx", "vy")


def matches(f: h5py.File) -> bool:
    return any(isinstance(f.get(f"{split}/u"), h5py.Dataset) for split in SPLITS)


def inspect(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    present = [s for s in SPLITS if isinstance(f.get(s), h5py.Group)]
    if len(present) != 1:
        raise PDEBenchError(
            path, "/".join(present), "one group train, valid or test per file", f"{present}"
        )
    split = present[0]
    key = f"{split}/u"
    u = dataset(f, path, key, "a (N, T, X, Y) dataset")
    if u.ndim != 4:
        raise PDEBenchError(path, key, "shape (N, T, X, Y)", u.shape)
    n, t, x, y = u.shape
    what = f"to match {key} {u.shape}"
    for name in ("vx", "vy"):
        require_shape(path, f"{split}/{name}", _get(f, path, split, name), u.shape, what)
    for name, shape in (("t", (n, t)), ("x", (n, x)), ("y", (n, y)), ("dt", (n,))):
        require_shape(path, f"{split}/{name}", _get(f, path, split, name), shape, what)
    buoyancy = _get(f, path, split, "buo_y")
    require_shape(path, f"{split}/buo_y", buoyancy, (n,), what)
    attrs = dict(attrs)
    values = np.asarray(buoyancy[()])
    notes = [f"split group: {split}"]
    if n and np.all(values == values[0]):
        attrs["buo_y"] = float(values[0])
    else:
        notes.append(
            f"buo_y varies per sample ({values.min():.4g} to {values.max():.4g}); "
            "per-sample parameters are not model inputs"
        )
    coords = {name: np.asarray(f[f"{split}/{name}"][0]) for name in ("x", "y", "t")}
    return PDEFileInfo(
        path,
        LAYOUT,
        n,
        t,
        (x, y),
        CHANNELS,
        coords,
        attrs,
        sources=tuple(FieldSource(f"{split}/{name}") for name in CHANNELS),
        notes=tuple(notes),
    )


def _get(f: h5py.File, path: Path, split: str, name: str) -> h5py.Dataset:
    return dataset(f, path, f"{split}/{name}", f"PDEArena's '{name}' dataset")
