"""Read, write and validate PDE data files: PDEBench's HDF5 layouts, and the layouts of
PDEBench's incompressible Navier-Stokes files, PDEArena's NS2D files and The Well.

Modules: ``pdebench_layouts`` (PDEBench's four layouts), ``ns_incompressible``, ``pdearena``,
``the_well`` (one layout each), ``layouts`` (which layout a file has: ``inspect_file``),
``reader`` (``PDEBenchReader``), ``finite`` (``check_finite``), ``writers`` (PDEBench's layouts
written atomically), ``info`` and ``errors`` (what they share).
"""

from lightstack.physics.data.pdebench.errors import (
    CORRUPT_FILE_ERRORS,
    FILE_KEY,
    PDEBenchError,
)
from lightstack.physics.data.pdebench.finite import check_finite, data_keys, non_finite_attrs
from lightstack.physics.data.pdebench.info import SPATIAL_AXES, FieldSource, PDEFileInfo
from lightstack.physics.data.pdebench.layouts import LAYOUTS, inspect_file, layout_suffix
from lightstack.physics.data.pdebench.pdebench_layouts import CFD_FIELDS
from lightstack.physics.data.pdebench.reader import PDEBenchReader, sample_key
from lightstack.physics.data.pdebench.writers import (
    create_1d,
    create_darcy,
    create_seed_groups,
    write_1d,
    write_cfd,
    write_darcy,
    write_seed_groups,
)

__all__ = [
    "CFD_FIELDS",
    "CORRUPT_FILE_ERRORS",
    "FILE_KEY",
    "LAYOUTS",
    "SPATIAL_AXES",
    "FieldSource",
    "PDEBenchError",
    "PDEBenchReader",
    "PDEFileInfo",
    "check_finite",
    "create_1d",
    "create_darcy",
    "create_seed_groups",
    "data_keys",
    "inspect_file",
    "layout_suffix",
    "non_finite_attrs",
    "sample_key",
    "write_1d",
    "write_cfd",
    "write_darcy",
    "write_seed_groups",
]
