"""The layouts users bring: PDEBench's incompressible NS, PDEArena's NS2D and The Well.

Each file is written here with h5py exactly as its project publishes it (keys, shapes, dtypes,
attributes), then inspected, read (also down-sampled), scanned and described.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from lightstack.physics.config import PhysicsDataConfig
from lightstack.physics.data.inspect import describe
from lightstack.physics.data.pdebench import (
    PDEBenchError,
    PDEBenchReader,
    check_finite,
    inspect_file,
)
from lightstack.physics.data.windows import PDEDataModule

RNG = np.random.default_rng(0)
N, T, X, Y = 3, 5, 8, 6


@contextlib.contextmanager
def _raises(path: Path, key: str, *more: str) -> Iterator[None]:
    with pytest.raises(PDEBenchError) as info:
        yield
    for part in (path.name, f"'{key}'", *more):
        assert part in str(info.value), f"{part!r} not in {info.value}"


# ----------------------------------------------------------------------------- PDEBench NS


def _ns_incompressible(path: Path) -> dict[str, np.ndarray]:
    """As PDEBench's ``data_io.h5_for`` creates it: float32, lzf, chunks of one frame."""
    arrays = {
        "velocity": RNG.standard_normal((N, T, X, Y, 2)).astype(np.float32),
        "particles": RNG.uniform(size=(N, T, X, Y, 1)).astype(np.float32),
        "force": RNG.standard_normal((N, X, Y, 2)).astype(np.float32),
        "t": np.tile(np.arange(T, dtype=np.float32) * 0.01, (N, 1)),
    }
    with h5py.File(path, "w") as f:
        f.attrs["config"] = "sim_name: ns_incom_inhom_2d_512\nn_batch: 3\n"
        f.attrs["latestIndex"] = T - 1
        for name, values in arrays.items():
            chunks = (1, 1, *values.shape[2:]) if values.ndim > 2 else None
            f.create_dataset(
                name, data=values, chunks=chunks, compression="lzf" if chunks else None
            )
    return arrays


def test_pdebench_incompressible_ns(tmp_path: Path) -> None:
    path = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    a = _ns_incompressible(path)
    info = inspect_file(path)
    assert (info.layout, info.channels) == ("ns_incompressible", ("Vx", "Vy", "particles"))
    assert (info.n_samples, info.n_times, info.spatial_shape) == (N, T, (X, Y))
    np.testing.assert_allclose(info.coords["t"], a["t"][0])
    np.testing.assert_allclose(info.coords["x"], (np.arange(X) + 0.5) / X)
    expected = np.concatenate([a["velocity"][1], a["particles"][1]], axis=-1)
    np.testing.assert_array_equal(PDEBenchReader(path).read(1), expected)
    reduced = PDEBenchReader(path, reduced_resolution=2, reduced_resolution_t=2).read(2)
    np.testing.assert_array_equal(
        reduced, np.concatenate([a["velocity"][2], a["particles"][2]], -1)[::2, ::2, ::2]
    )
    text = describe(path)
    assert "layout: ns_incompressible" in text and "note: force: (3, 8, 6, 2)" in text
    with h5py.File(path, "a") as f:
        f.attrs["latestIndex"] = 2  # an interrupted run: frames 3 and 4 never written
    assert PDEBenchReader(path).read(0).shape == (3, X, Y, 3)
    assert "note: latestIndex 2: frames after it were never written" in describe(path)
    with h5py.File(path, "a") as f:
        f["force"][2, 0, 0, 1] = np.nan
    with _raises(path, "force", "sample 2"):
        check_finite(path)


def test_pdebench_incompressible_ns_shape_errors(tmp_path: Path) -> None:
    path = tmp_path / "ns.h5"
    _ns_incompressible(path)
    with h5py.File(path, "a") as f:
        del f["particles"]
        f.create_dataset("particles", data=np.zeros((N, T, X, Y), np.float32))
    with _raises(path, "particles", f"shape {(N, T, X, Y, 1)}", f"{(N, T, X, Y)}"):
        inspect_file(path)
    with h5py.File(path, "a") as f:
        del f["particles"], f["t"]
        f.create_dataset("particles", data=np.zeros((N, T, X, Y, 1), np.float32))
    with _raises(path, "t", "missing"):
        inspect_file(path)


# ----------------------------------------------------------------------------- PDEArena


def _pdearena(path: Path, split: str = "train", buoyancy: np.ndarray | None = None) -> dict:
    """As PDEArena's ``pdedatagen`` writes NavierStokes2D: one split group, float64 arrays."""
    x = np.linspace(0, 32, X)
    y = np.linspace(0, 32, Y)
    arrays = {
        "u": RNG.uniform(size=(N, T, X, Y)),
        "vx": RNG.standard_normal((N, T, X, Y)),
        "vy": RNG.standard_normal((N, T, X, Y)),
        "t": np.tile(np.linspace(18, 102, T), (N, 1)),
        "x": np.tile(x, (N, 1)),
        "dx": np.full(N, x[1] - x[0]),
        "y": np.tile(y, (N, 1)),
        "dy": np.full(N, y[1] - y[0]),
        "dt": np.full(N, 1.5),
        "buo_y": np.full(N, 0.5) if buoyancy is None else buoyancy,
    }
    with h5py.File(path, "a") as f:
        group = f.create_group(split)
        for name, values in arrays.items():
            group.create_dataset(name, data=values, dtype=float)
    return arrays


def test_pdearena_navier_stokes(tmp_path: Path) -> None:
    path = tmp_path / "NavierStokes2D_train_42_0.50000_3.h5"
    a = _pdearena(path)
    info = inspect_file(path)
    assert (info.layout, info.channels, info.spatial_shape) == (
        "pdearena",
        ("u", "vx", "vy"),
        (X, Y),
    )
    assert info.attrs["buo_y"] == 0.5
    np.testing.assert_allclose(info.coords["y"], a["y"][0])
    expected = np.stack([a["u"][2], a["vx"][2], a["vy"][2]], axis=-1).astype(np.float32)
    np.testing.assert_array_equal(PDEBenchReader(path).read(2), expected)
    np.testing.assert_array_equal(
        PDEBenchReader(path, reduced_resolution=3).read(2, slice(1, 3)), expected[1:3, ::3, ::3]
    )
    assert "note: split group: train" in describe(path)

    varying = tmp_path / "NavierStokes2D_valid_1.h5"
    _pdearena(varying, "valid", buoyancy=np.array([0.2, 0.3, 0.4]))
    info = inspect_file(varying)
    assert "buo_y" not in info.attrs
    assert any("buo_y varies per sample (0.2 to 0.4)" in note for note in info.notes)


def test_pdearena_errors_name_key_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "two.h5"
    _pdearena(path)
    _pdearena(path, "test")
    with _raises(path, "train/test", "one group train, valid or test"):
        inspect_file(path)
    path = tmp_path / "short.h5"
    _pdearena(path)
    with h5py.File(path, "a") as f:
        del f["train/vy"]
        f["train/vy"] = np.zeros((N, T, X))
    with _raises(path, "train/vy", f"shape {(N, T, X, Y)}", f"{(N, T, X)}"):
        inspect_file(path)


# ----------------------------------------------------------------------------- The Well


def _field(group: h5py.Group, name: str, values: np.ndarray, **flags: object) -> None:
    ds = group.create_dataset(name, data=values.astype(np.float32))
    attrs = {"dim_varying": [True, True], "sample_varying": True, "time_varying": True}
    attrs.update(flags)
    for key, value in attrs.items():
        ds.attrs[key] = value


def _the_well(path: Path) -> dict[str, np.ndarray]:
    """The Well's specification (docs/data_format.md) for a 2D data set of N trajectories."""
    a = {
        "buoyancy": RNG.standard_normal((N, T, X, Y)),
        "pressure": RNG.standard_normal((N, T, X)),  # varies along x only
        "obstacle": RNG.uniform(size=(N, X, Y)),  # not time-varying: no channel
        "velocity": RNG.standard_normal((N, T, X, Y, 2)),
    }
    with h5py.File(path, "w") as f:
        f.attrs.update(
            {
                "dataset_name": "rayleigh_benard",
                "grid_type": "cartesian",
                "n_spatial_dims": 2,
                "n_trajectories": N,
                "simulation_parameters": ["Rayleigh"],
                "Rayleigh": 1e6,
            }
        )
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        for name, values in (
            ("time", np.linspace(0, 1, T)),
            ("x", np.linspace(0, 4, X)),
            ("y", np.linspace(0, 1, Y)),
        ):
            ds = dims.create_dataset(name, data=values.astype(np.float32))
            ds.attrs["sample_varying"] = False
            ds.attrs["time_varying"] = False
        bcs = f.create_group("boundary_conditions")
        for name, dim, kind in (("x_periodic", "x", "PERIODIC"), ("y_wall", "y", "WALL")):
            bc = bcs.create_group(name)
            bc.attrs.update(
                {
                    "associated_dims": [dim],
                    "associated_fields": [],
                    "bc_type": kind,
                    "sample_varying": False,
                    "time_varying": False,
                }
            )
            mask = np.zeros(X if dim == "x" else Y, dtype=bool)
            mask[[0, -1]] = True
            bc.create_dataset("mask", data=mask)
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Rayleigh"]
        ds = scalars.create_dataset("Rayleigh", data=np.float32(1e6))
        ds.attrs["sample_varying"] = False
        ds.attrs["time_varying"] = False
        t0 = f.create_group("t0_fields")
        t0.attrs["field_names"] = ["buoyancy", "pressure", "obstacle"]
        _field(t0, "buoyancy", a["buoyancy"])
        _field(t0, "pressure", a["pressure"], dim_varying=[True, False])
        _field(t0, "obstacle", a["obstacle"], time_varying=False)
        t1 = f.create_group("t1_fields")
        t1.attrs["field_names"] = ["velocity"]
        _field(t1, "velocity", a["velocity"])
        t2 = f.create_group("t2_fields")
        t2.attrs["field_names"] = np.array([], dtype=h5py.string_dtype())
    return a


def test_the_well(tmp_path: Path) -> None:
    path = tmp_path / "rayleigh_benard_Rayleigh_1e6.hdf5"
    a = _the_well(path)
    info = inspect_file(path)
    assert info.layout == "the_well"
    assert info.channels == ("buoyancy", "pressure", "velocity_x", "velocity_y")
    assert (info.n_samples, info.n_times, info.spatial_shape) == (N, T, (X, Y))
    assert info.attrs["Rayleigh"] == 1e6
    np.testing.assert_allclose(info.coords["x"], np.linspace(0, 4, X), rtol=1e-6)
    pressure = np.broadcast_to(a["pressure"][1][:, :, None, None], (T, X, Y, 1))
    expected = np.concatenate(
        [a["buoyancy"][1][..., None], pressure, a["velocity"][1]], axis=-1
    ).astype(np.float32)
    np.testing.assert_array_equal(PDEBenchReader(path).read(1), expected)
    np.testing.assert_array_equal(
        PDEBenchReader(path, reduced_resolution=2).read(1, slice(2, None)), expected[2:, ::2, ::2]
    )
    text = describe(path)
    assert "layout: the_well" in text
    assert "note: constant field t0_fields/obstacle (3, 8, 6): not a model input" in text
    assert "note: boundary y_wall: WALL on y" in text
    check_finite(path)
    with h5py.File(path, "a") as f:
        f["t1_fields/velocity"][1, 0, 0, 0, 1] = np.inf
    with _raises(path, "t1_fields/velocity", "sample 1"):
        check_finite(path)


def test_the_well_errors_name_key_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "well.hdf5"
    _the_well(path)
    with h5py.File(path, "a") as f:
        del f["t1_fields/velocity"]
        _field(f["t1_fields"], "velocity", np.zeros((N, T, X, Y)))
    with _raises(path, "t1_fields/velocity", f"shape {(N, T, X, Y, 2)}", f"{(N, T, X, Y)}"):
        inspect_file(path)
    path = tmp_path / "no_bcs.hdf5"
    _the_well(path)
    with h5py.File(path, "a") as f:
        del f["boundary_conditions"]
    with _raises(path, "boundary_conditions", "missing"):
        inspect_file(path)


def test_the_well_one_dimensional(tmp_path: Path) -> None:
    """One spatial axis: h5py returns one-element attributes (``dim_varying``) as scalars."""
    path = tmp_path / "well1d.hdf5"
    u = RNG.standard_normal((N, T, X)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.attrs.update({"n_trajectories": N, "n_spatial_dims": 1, "dataset_name": "waves"})
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x"]
        dims["time"] = np.arange(T, dtype=np.float32)
        dims["x"] = np.linspace(0, 1, X, dtype=np.float32)
        f.create_group("boundary_conditions")
        t0 = f.create_group("t0_fields")
        t0.attrs["field_names"] = ["u"]
        _field(t0, "u", u, dim_varying=[True])
    info = inspect_file(path)
    assert (info.channels, info.spatial_shape) == (("u",), (X,))
    np.testing.assert_array_equal(PDEBenchReader(path).read(2)[..., 0], u[2])


def test_every_layout_serves_training_windows(tmp_path: Path) -> None:
    files = [tmp_path / "ns.h5", tmp_path / "arena.h5", tmp_path / "well.hdf5"]
    _ns_incompressible(files[0])
    _pdearena(files[1])
    _the_well(files[2])
    for path, channels in zip(files, (3, 3, 4), strict=True):
        cfg = PhysicsDataConfig(train_files=[str(path)], val_fraction=0.3, test_fraction=0.3)
        dm = PDEDataModule(cfg, horizon=2)
        item = dm.windows("train", 2)[0]
        assert item["fields"].shape == (3, X, Y, channels)
        assert item["grid"].shape == (X, Y, 2) and float(item["dt"]) > 0
        assert dm.windows("test", None)[0]["fields"].shape == (T, X, Y, channels)
