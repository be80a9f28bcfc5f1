"""Generated files load in PDEBench's own loaders, which pick their branch from the file name.

``pdebench_load`` re-implements the branch and the reads of PDEBench's ``FNODatasetSingle``
(pdebench/models/fno/utils.py; ``UNetDatasetSingle`` reads the same way): a name whose last two
characters are ``h5`` is read as seed groups (``f[seed]["data"]``, ``f[seed]["grid"]``), any
other name as single arrays (``tensor``, ``x-coordinate``; ``t-coordinate`` as PDEBench's
PINN loader reads it).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lightstack.physics.data.generate import default_filename, generate, suffix_warning
from lightstack.physics.data.pdebench import PDEBenchReader


def pdebench_load(path: Path) -> dict[str, np.ndarray]:
    """PDEBench's branch on ``filename[-2:]``, then its reads, in its axis order."""
    filename = str(path)
    with h5py.File(path, "r") as f:
        if filename[-2:] != "h5":
            data = np.array(f["tensor"], dtype=np.float32)  # batch, time, x
            return {
                "data": np.transpose(data, (0, 2, 1))[..., None],  # batch, x, t, channel
                "x": np.array(f["x-coordinate"], dtype=np.float32),
                "t": np.array(f["t-coordinate"], dtype=np.float32),
            }
        keys = sorted(f.keys())
        data = np.stack([np.array(f[k]["data"], dtype=np.float32) for k in keys])
        return {
            "data": np.moveaxis(data, 1, -2),  # batch, x, y, t, channel
            "x": np.array(f[keys[0]]["grid"]["x"], dtype=np.float32),
            "y": np.array(f[keys[0]]["grid"]["y"], dtype=np.float32),
            "t": np.array(f[keys[0]]["grid"]["t"], dtype=np.float32),
        }


def test_single_array_file_takes_pdebench_single_branch(tmp_path: Path) -> None:
    name = default_filename("burgers1d")
    assert name == "burgers1d.hdf5"
    path = generate("burgers1d", tmp_path / name, 3, seed=0, nx=32, nu=0.5, t_end=0.1)
    loaded = pdebench_load(path)
    reader = PDEBenchReader(path)
    ours = np.stack([reader.read(i) for i in range(3)])  # batch, t, x, channel
    np.testing.assert_array_equal(loaded["data"], np.moveaxis(ours, 1, -2))
    np.testing.assert_array_equal(loaded["x"], reader.info.coords["x"])
    with h5py.File(path) as f:
        np.testing.assert_array_equal(loaded["t"], f["t-coordinate"][()])
    assert loaded["t"].shape == (12,)  # PDEBench's one extra time coordinate


def test_the_same_file_named_h5_is_misread_as_seed_groups(tmp_path: Path) -> None:
    path = generate("advection1d", tmp_path / "advection1d.h5", 2, seed=0, nx=16, t_end=0.1)
    assert "expect *.hdf5" in (suffix_warning("advection1d", path) or "")
    assert suffix_warning("advection1d", tmp_path / "a.hdf5") is None
    # PDEBench's seed-group branch indexes the file's datasets as groups: h5py refuses.
    with pytest.raises(ValueError, match="Field names only allowed for compound types"):
        pdebench_load(path)


def test_seed_group_file_takes_pdebench_seed_branch(tmp_path: Path) -> None:
    name = default_filename("ns2d")
    assert name == "ns2d.h5"
    path = generate("ns2d", tmp_path / name, 2, seed=0, nx=16, t_end=1.0, dt_save=0.5)
    loaded = pdebench_load(path)
    reader = PDEBenchReader(path)
    ours = np.stack([reader.read(i) for i in range(2)])  # batch, t, x, y, channel
    np.testing.assert_array_equal(loaded["data"], np.moveaxis(ours, 1, -2))
    np.testing.assert_array_equal(loaded["t"], reader.info.coords["t"])
    np.testing.assert_array_equal(loaded["y"], reader.info.coords["y"])
