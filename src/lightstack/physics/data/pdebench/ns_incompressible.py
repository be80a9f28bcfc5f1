"""PDEBench's 2D incompressible Navier-Stokes files (``ns_incom_inhom_2d_512-<seed>.h5``).

As its generator (``sim_ns_incomp_2d.py`` through ``data_io.py``) writes them: ``velocity``
``(N, T, X, Y, 2)``, ``particles`` ``(N, T, X, Y, 1)`` (the advected density), ``force``
``(N, X, Y, 2)`` (a constant body force per sample) and ``t`` ``(N, T)``. The channels are
``Vx``, ``Vy`` and ``particles``; ``force`` is checked and described but is not a model input.
The files store no spatial coordinates: the grid is taken as the cell centres of the unit
square. The attribute ``latestIndex`` is the last frame the simulation wrote; later frames of
an interrupted run are left out.
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
    unit_cell_centres,
)

LAYOUT = "ns_incompressible"
CHANNELS = ("Vx", "Vy", "particles")


def matches(f: h5py.File) -> bool:
    return isinstance(f.get("velocity"), h5py.Dataset)


def inspect(f: h5py.File, path: Path, attrs: dict) -> PDEFileInfo:
    velocity = dataset(f, path, "velocity", "a (N, T, X, Y, 2) dataset")
    if velocity.ndim != 5 or velocity.shape[-1] != 2:
        raise PDEBenchError(path, "velocity", "shape (N, T, X, Y, 2)", velocity.shape)
    n, t, x, y, _ = velocity.shape
    what = f"to match velocity {velocity.shape}"
    particles = dataset(f, path, "particles", f"a dataset of shape {(n, t, x, y, 1)}")
    require_shape(path, "particles", particles, (n, t, x, y, 1), what)
    force = dataset(f, path, "force", f"a dataset of shape {(n, x, y, 2)}")
    require_shape(path, "force", force, (n, x, y, 2), what)
    times = dataset(f, path, "t", f"a dataset of shape {(n, t)}")
    require_shape(path, "t", times, (n, t), what)
    notes = [
        f"force: {force.shape}, a constant body force per sample; not a model input",
        "coordinates: none in the file; the grid is the unit square's cell centres",
    ]
    written = attrs.get("latestIndex")
    if isinstance(written, int) and 0 <= written < t - 1:
        notes.append(f"latestIndex {written}: frames after it were never written; not read")
        t = written + 1
    coords = {
        "x": unit_cell_centres(x),
        "y": unit_cell_centres(y),
        "t": np.asarray(times[0, :t]),
    }
    return PDEFileInfo(
        path,
        LAYOUT,
        n,
        t,
        (x, y),
        CHANNELS,
        coords,
        attrs,
        sources=(
            FieldSource("velocity", components=2, trailing_axes=1),
            FieldSource("particles", components=1, trailing_axes=1),
        ),
        aux_keys=("force",),
        notes=tuple(notes),
    )
