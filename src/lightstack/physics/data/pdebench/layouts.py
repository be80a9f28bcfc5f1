"""Which layout a file has, and its description (``inspect_file``); reads no large array."""

from __future__ import annotations

from pathlib import Path

import h5py

from lightstack.physics.data.pdebench import ns_incompressible, pdearena, the_well
from lightstack.physics.data.pdebench.errors import (
    CORRUPT_FILE_ERRORS,
    FILE_KEY,
    PDEBenchError,
    open_h5,
)
from lightstack.physics.data.pdebench.info import PDEFileInfo, read_attrs
from lightstack.physics.data.pdebench.pdebench_layouts import (
    inspect_cfd,
    inspect_seed_groups,
    inspect_tensor,
)

LAYOUTS = (
    "1d_tensor",
    "cfd",
    "darcy",
    "seed_groups",
    ns_incompressible.LAYOUT,
    pdearena.LAYOUT,
    the_well.LAYOUT,
)
# What each layout looks like, for the error about a file that matches none.
_SIGNATURES = (
    "'tensor' (PDEBench 1D or Darcy)",
    "'density'/'pressure'/'Vx' (PDEBench CFD)",
    "seed groups '0000/data' (PDEBench)",
    "'velocity'/'particles'/'force'/'t' (PDEBench incompressible NS)",
    "'train/u'/'vx'/'vy' (PDEArena NS2D)",
    "'t0_fields'/'t1_fields'/'dimensions' (The Well)",
)


def layout_suffix(layout: str) -> str:
    """The file suffix PDEBench's loaders expect: they read ``*.h5`` as seed groups and any
    other name as single-array datasets (``pdebench/models/fno/utils.py``)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}'; choose one of {list(LAYOUTS)}")
    return ".h5" if layout == "seed_groups" else ".hdf5"


def inspect_file(path: str | Path) -> PDEFileInfo:
    """Validate the structure and shapes of ``path`` and describe it; reads no large array."""
    path = Path(path)
    with open_h5(path) as f:
        try:
            return _inspect(f, path)
        except PDEBenchError:
            raise
        except CORRUPT_FILE_ERRORS as exc:
            raise PDEBenchError(path, FILE_KEY, "a readable HDF5 file", f"damaged ({exc})") from exc


def _inspect(f: h5py.File, path: Path) -> PDEFileInfo:
    keys = sorted(f.keys())
    attrs = read_attrs(f.attrs)
    if "tensor" in keys:
        return inspect_tensor(f, path, attrs)
    if "density" in keys:
        return inspect_cfd(f, path, attrs)
    for layout in (ns_incompressible, the_well, pdearena):
        if layout.matches(f):
            return layout.inspect(f, path, attrs)
    groups = [k for k in keys if f.get(k, getclass=True) is h5py.Group]
    if groups:
        return inspect_seed_groups(f, path, groups, attrs)
    raise PDEBenchError(
        path,
        "tensor",
        "a known layout: " + ", ".join(_SIGNATURES),
        f"keys {keys}" if keys else "an empty file",
    )
