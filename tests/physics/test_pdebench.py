"""PDEBench HDF5 layouts: round trips, down-sampling, lazy reads, pickling and every error."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from lightstack.physics.data.pdebench import (
    PDEBenchError,
    PDEBenchReader,
    check_finite,
    create_1d,
    inspect_file,
    write_1d,
    write_cfd,
    write_darcy,
    write_seed_groups,
)

RNG = np.random.default_rng(0)
N, T, X, Y = 4, 9, 12, 10


def _1d(tmp_path: Path) -> tuple[Path, np.ndarray]:
    u = RNG.standard_normal((N, T, X)).astype(np.float32)
    path = tmp_path / "burgers.hdf5"
    write_1d(path, u, np.linspace(0, 1, X), np.arange(T + 1) * 0.01, {"Nu": 0.01})
    return path, u


def _cfd2d(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    fields = {k: RNG.standard_normal((N, T, X, Y)) for k in ("density", "pressure", "Vx", "Vy")}
    path = tmp_path / "cfd.hdf5"
    coords = {"x": np.linspace(0, 1, X), "y": np.linspace(0, 1, Y)}
    write_cfd(path, fields, coords, np.arange(T + 1) * 0.05, {"eta": 0.1, "zeta": 0.1, "M": 1.0})
    return path, fields


def _darcy(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    solution = RNG.standard_normal((N, 1, X, Y))
    nu = RNG.uniform(1, 12, (N, X, Y))
    path = tmp_path / "darcy.hdf5"
    write_darcy(path, solution, nu, np.linspace(0, 1, X), np.linspace(0, 1, Y), {"beta": 1.0})
    return path, solution, nu


def _seed_groups(tmp_path: Path, dims: int = 2) -> tuple[Path, list[np.ndarray]]:
    spatial = (X, Y) if dims == 2 else (X,)
    data = [RNG.standard_normal((T, *spatial, 2)) for _ in range(N)]
    path = tmp_path / f"groups{dims}d.h5"
    y = np.linspace(0, 1, Y) if dims == 2 else None
    write_seed_groups(path, data, np.linspace(0, 1, X), y, np.linspace(0, 5, T), {}, ("u", "v"))
    return path, data


# ----------------------------------------------------------------------------- round trips


def test_1d_round_trip_has_pdebench_keys_dtypes_and_values(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    with h5py.File(path) as f:
        assert sorted(f.keys()) == ["t-coordinate", "tensor", "x-coordinate"]
        assert f["tensor"].dtype == np.float32 and f["tensor"].shape == (N, T, X)
        assert f["t-coordinate"].shape == (T + 1,) and f["x-coordinate"].dtype == np.float32
        assert f.attrs["Nu"] == pytest.approx(0.01)
    info = inspect_file(path)
    assert (info.layout, info.n_samples, info.n_times) == ("1d_tensor", N, T)
    assert info.spatial_shape == (X,) and info.channels == ("u",)
    assert info.coords["t"].shape == (T + 1,) and info.attrs == {"Nu": pytest.approx(0.01)}
    reader = PDEBenchReader(path)
    out = reader.read(2)
    assert out.dtype == np.float32 and out.shape == (T, X, 1)
    np.testing.assert_array_equal(out[..., 0], u[2])
    assert reader.grid().shape == (X, 1)


def test_cfd_round_trip_stacks_channels_in_pdebench_order(tmp_path: Path) -> None:
    path, fields = _cfd2d(tmp_path)
    reader = PDEBenchReader(path)
    assert reader.info.layout == "cfd"
    assert reader.info.channels == ("density", "pressure", "Vx", "Vy")
    assert reader.info.attrs["M"] == 1.0
    out = reader.read(1)
    assert out.shape == (T, X, Y, 4)
    for c, key in enumerate(reader.info.channels):
        np.testing.assert_allclose(out[..., c], fields[key][1].astype(np.float32))
    grid = reader.grid()
    assert grid.shape == (X, Y, 2)
    np.testing.assert_allclose(grid[3, 4], [3 / (X - 1), 4 / (Y - 1)], rtol=1e-6)


def test_cfd_1d_round_trip(tmp_path: Path) -> None:
    fields = {k: RNG.standard_normal((2, T, X)) for k in ("density", "pressure", "Vx")}
    path = tmp_path / "cfd1d.hdf5"
    write_cfd(path, fields, {"x": np.arange(X)}, np.arange(T + 1), {})
    out = PDEBenchReader(path).read(0)
    assert out.shape == (T, X, 3)
    np.testing.assert_allclose(out[..., 2], fields["Vx"][0].astype(np.float32))


def test_darcy_round_trip_solution_and_coefficient(tmp_path: Path) -> None:
    path, solution, nu = _darcy(tmp_path)
    with h5py.File(path) as f:
        assert f["tensor"].shape == (N, 1, X, Y) and f["nu"].shape == (N, X, Y)
        assert f["tensor"].dtype == np.float32 and f["nu"].dtype == np.float32
    reader = PDEBenchReader(path, reduced_resolution=2, reduced_resolution_t=4)
    assert reader.info.n_times == 1 and reader.info.spatial_shape == (X // 2, Y // 2)
    out = reader.read(3)
    assert out.shape == (1, X // 2, Y // 2, 1)
    np.testing.assert_allclose(out[0, ..., 0], solution[3, 0, ::2, ::2].astype(np.float32))
    coefficient = reader.read_coefficient(3)
    assert coefficient.shape == (X // 2, Y // 2, 1)
    np.testing.assert_allclose(coefficient[..., 0], nu[3, ::2, ::2].astype(np.float32))


@pytest.mark.parametrize("dims", [1, 2])
def test_seed_groups_round_trip(tmp_path: Path, dims: int) -> None:
    path, data = _seed_groups(tmp_path, dims)
    with h5py.File(path) as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002", "0003"]
        assert f["0001/grid/t"].shape == (T,) and f["0001/data"].dtype == np.float32
    info = inspect_file(path)
    assert info.layout == "seed_groups" and info.channels == ("u", "v")
    assert (info.n_samples, info.n_times, info.ndim) == (N, T, dims)
    out = PDEBenchReader(path).read(2)
    np.testing.assert_allclose(out, data[2].astype(np.float32))


def test_files_written_the_way_pdebench_writes_them_load(tmp_path: Path) -> None:
    """Files made with plain h5py as PDEBench's Data_Merge.py / gen_diff_react.py make them."""
    tensor = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    path = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=tensor)
        f.create_dataset("x-coordinate", data=np.linspace(0, 1, 8, dtype=np.float32))
        f.create_dataset("t-coordinate", data=np.arange(6, dtype=np.float32) * 0.01)
        f.attrs["beta"] = 0.1
    np.testing.assert_array_equal(PDEBenchReader(path).read(1)[..., 0], tensor[1])

    path = tmp_path / "2D_diff-react_NA_NA.h5"
    data = RNG.standard_normal((5, 8, 8, 2)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for seed in range(2):
            f.create_dataset(f"{seed:04d}/data", data=data + seed, compression="lzf")
            for axis, n in (("x", 8), ("y", 8), ("t", 5)):
                f.create_dataset(f"{seed:04d}/grid/{axis}", data=np.arange(n, dtype=np.float32))
            f[f"{seed:04d}"].attrs["config"] = "sim: {}"
    reader = PDEBenchReader(path, reduced_resolution=2)
    assert reader.info.channels == ("u0", "u1")
    np.testing.assert_array_equal(reader.read(1), data[:, ::2, ::2] + 1)


# ----------------------------------------------------------------------------- reduction


def test_reduced_resolution_slices_like_pdebench(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    reader = PDEBenchReader(path, reduced_resolution=5, reduced_resolution_t=4)
    n_t, n_x = math.ceil(T / 4), math.ceil(X / 5)
    assert reader.info.n_times == n_t and reader.info.spatial_shape == (n_x,)
    out = reader.read(1)
    assert out.shape == (n_t, n_x, 1)
    np.testing.assert_array_equal(out[..., 0], u[1, ::4, ::5])
    raw = inspect_file(path).coords
    np.testing.assert_array_equal(reader.info.coords["x"], raw["x"][::5])
    np.testing.assert_array_equal(reader.info.coords["t"], raw["t"][:T][::4])
    np.testing.assert_array_equal(reader.grid()[:, 0], raw["x"][::5])


def test_reduced_resolution_2d_cfd_and_seed_groups(tmp_path: Path) -> None:
    path, fields = _cfd2d(tmp_path)
    out = PDEBenchReader(path, 3, 2).read(0)
    np.testing.assert_allclose(out[..., 1], fields["pressure"][0, ::2, ::3, ::3].astype(np.float32))
    path, data = _seed_groups(tmp_path)
    reader = PDEBenchReader(path, 3, 2)
    assert reader.grid().shape == (math.ceil(X / 3), math.ceil(Y / 3), 2)
    np.testing.assert_allclose(reader.read(3), data[3][::2, ::3, ::3].astype(np.float32))


def test_time_slice_indexes_the_reduced_time_axis(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    reader = PDEBenchReader(path, reduced_resolution_t=2)
    np.testing.assert_array_equal(reader.read(0, slice(1, 3))[..., 0], u[0, ::2][1:3])
    np.testing.assert_array_equal(reader.read(0, slice(None, None, 2))[..., 0], u[0, ::4])
    assert reader.read(0, slice(3, 3)).shape == (0, X, 1)
    with pytest.raises(ValueError, match="positive step"):
        reader.read(0, slice(None, None, -1))


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_reduction_factors_must_be_positive_integers(tmp_path: Path, bad: float) -> None:
    path, _ = _1d(tmp_path)
    with pytest.raises(ValueError, match="reduced_resolution"):
        PDEBenchReader(path, reduced_resolution=bad)


# ----------------------------------------------------------------------------- laziness, pickling


def test_reader_reads_only_the_requested_sample(tmp_path: Path, monkeypatch) -> None:
    path, _ = _1d(tmp_path)
    reader = PDEBenchReader(path)
    assert reader._file is None  # nothing opened until the first read
    selections = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest):
        selections.append((self.name, args))
        return original(self, args, *rest)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    reader.read(3, slice(2, 4))
    assert selections == [("/tensor", (3, slice(2, 4, 1), slice(None, None, 1)))]


def test_reader_pickles_without_its_handle_and_reopens_after_fork(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    reader = PDEBenchReader(path, reduced_resolution=2)
    reader.read(0)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read(1)[..., 0], u[1, :, ::2])
    first = reader._file
    reader._pid = os.getpid() + 1  # what a forked worker sees
    np.testing.assert_array_equal(reader.read(2)[..., 0], u[2, :, ::2])
    assert reader._file is not first and reader._pid == os.getpid()
    reader.close()
    clone.close()
    assert reader._file is None


def test_reader_works_in_a_forked_worker(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    reader = PDEBenchReader(path)
    reader.read(0)  # the parent holds an open handle when the worker forks
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    worker = ctx.Process(target=lambda: queue.put((os.getpid(), reader.read(3))))
    worker.start()
    pid, out = queue.get(timeout=30)
    worker.join(timeout=30)
    assert worker.exitcode == 0 and pid != os.getpid()
    np.testing.assert_array_equal(out[..., 0], u[3])
    np.testing.assert_array_equal(reader.read(1)[..., 0], u[1])  # parent handle still fine


# ----------------------------------------------------------------------------- errors


@contextlib.contextmanager
def _raises(path: Path, key: str, *more: str) -> Iterator[None]:
    """Expect a PDEBenchError whose message names the file, the key and ``more``."""
    with pytest.raises(PDEBenchError) as info:
        yield
    message = str(info.value)
    for part in (path.name, f"'{key}'", *more):
        assert part in message, f"{part!r} not in {message!r}"


def test_missing_file_and_non_hdf5_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.hdf5"
    with _raises(missing, "(file)", "no such file"):
        inspect_file(missing)
    text = tmp_path / "notes.hdf5"
    text.write_text("not hdf5")
    with _raises(text, "(file)", "HDF5"):
        PDEBenchReader(text)
    with _raises(tmp_path, "(file)"):
        inspect_file(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    h5py.File(path, "w").close()
    with _raises(path, "tensor", "empty file"):
        inspect_file(path)


def _raw_1d(path: Path, t_len: int = T + 1, x: bool = True, tensor_shape=(N, T, X)) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=np.zeros(tensor_shape, np.float32))
        if x:
            f.create_dataset("x-coordinate", data=np.zeros(X, np.float32))
        f.create_dataset("t-coordinate", data=np.zeros(t_len, np.float32))
    return path


def test_missing_coordinate_wrong_length_and_wrong_rank(tmp_path: Path) -> None:
    path = _raw_1d(tmp_path / "a.h5", x=False)
    with _raises(path, "x-coordinate", "missing"):
        inspect_file(path)
    path = _raw_1d(tmp_path / "b.h5", t_len=T + 3)
    with _raises(path, "t-coordinate", f"({T + 1},)", f"({T + 3},)"):
        inspect_file(path)
    path = _raw_1d(tmp_path / "c.h5", tensor_shape=(N, T))
    with _raises(path, "tensor", "rank 3"):
        inspect_file(path)


def test_cfd_field_shape_mismatch_and_missing_velocity(tmp_path: Path) -> None:
    path, _ = _cfd2d(tmp_path)
    with h5py.File(path, "a") as f:
        del f["pressure"]
        f.create_dataset("pressure", data=np.zeros((N, T, X, Y + 1), np.float32))
    with _raises(path, "pressure", f"{(N, T, X, Y)}", f"{(N, T, X, Y + 1)}"):
        inspect_file(path)
    with h5py.File(path, "a") as f:
        del f["pressure"], f["Vy"]
        f.create_dataset("pressure", data=np.zeros((N, T, X, Y), np.float32))
    with _raises(path, "Vy", "missing"):
        inspect_file(path)


def test_darcy_coefficient_shape_mismatch(tmp_path: Path) -> None:
    path, _, _ = _darcy(tmp_path)
    with h5py.File(path, "a") as f:
        del f["nu"]
        f.create_dataset("nu", data=np.zeros((N, X, X), np.float32))
    with _raises(path, "nu", f"{(N, X, Y)}"):
        inspect_file(path)
    with h5py.File(path, "a") as f:
        del f["nu"]
    with _raises(path, "nu", "missing"):
        inspect_file(path)


def test_seed_group_mismatch_and_missing_grid(tmp_path: Path) -> None:
    path, _ = _seed_groups(tmp_path)
    with h5py.File(path, "a") as f:
        del f["0001/data"]
        f.create_dataset("0001/data", data=np.zeros((T, X, Y, 3), np.float32))
    with _raises(path, "0001/data", f"{(T, X, Y, 2)}"):
        inspect_file(path)
    path, _ = _seed_groups(tmp_path)
    with h5py.File(path, "a") as f:
        del f["0000/grid/x"]
    with _raises(path, "0000/grid/x", "missing"):
        inspect_file(path)


def test_sample_index_out_of_range(tmp_path: Path) -> None:
    path, _ = _1d(tmp_path)
    reader = PDEBenchReader(path)
    with _raises(path, "tensor", f"[0, {N})", str(N)):
        reader.read(N)
    with _raises(path, "tensor", "-1"):
        reader.read(-1)
    with _raises(path, "nu", "Darcy"):
        reader.read_coefficient(0)
    path, _ = _seed_groups(tmp_path)
    with _raises(path, "0009/data"):
        PDEBenchReader(path).read(9)


def test_check_finite_names_key_and_sample(tmp_path: Path) -> None:
    path, _ = _1d(tmp_path)
    check_finite(path)
    with h5py.File(path, "a") as f:
        f["tensor"][2, 3, 4] = np.nan
    with _raises(path, "tensor", "sample 2"):
        check_finite(path)
    check_finite(path, max_samples=2)  # the bad sample is not scanned
    with _raises(path, "Vx", "missing"):
        check_finite(path, key="Vx")

    path, _ = _cfd2d(tmp_path)
    with h5py.File(path, "a") as f:
        f["Vy"][3, 0, 0, 0] = np.inf
    check_finite(path, key="density")
    with _raises(path, "Vy", "sample 3"):
        check_finite(path)

    path, _ = _seed_groups(tmp_path)
    with h5py.File(path, "a") as f:
        f["0002/data"][0, 0, 0, 1] = -np.inf
    with _raises(path, "0002/data", "sample 2"):
        check_finite(path)


def test_writers_validate_shapes(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with _raises(path, "t-coordinate", f"({T + 1},)"):
        write_1d(path, np.zeros((N, T, X)), np.zeros(X), np.zeros(T), {})
    with _raises(path, "x-coordinate"):
        write_1d(path, np.zeros((N, T, X)), np.zeros(X + 1), np.zeros(T + 1), {})
    partial = {k: np.zeros((1, T, X, Y)) for k in ("density", "pressure", "Vx")}
    with _raises(path, "Vy", "missing"):
        write_cfd(path, partial, {}, np.zeros(T + 1), {})
    with _raises(path, "nu"):
        write_darcy(path, np.zeros((N, 1, X, Y)), np.zeros((N, X)), np.zeros(X), np.zeros(Y), {})
    with _raises(path, "0001/data"):
        write_seed_groups(
            path, [np.zeros((T, X, 1)), np.zeros((T, X + 1, 1))], np.zeros(X), None, np.zeros(T), {}
        )
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary files left behind


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path, u = _1d(tmp_path)
    with pytest.raises(RuntimeError), create_1d(path, 1, 2, np.zeros(3), np.zeros(3)) as tensor:
        tensor[0] = 1.0
        raise RuntimeError("solver crashed")
    np.testing.assert_array_equal(PDEBenchReader(path).read(0)[..., 0], u[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["burgers.hdf5"]


def test_error_is_a_picklable_value_error() -> None:
    err = PDEBenchError("/data/f.h5", "tensor", "shape (N, T, X)", (1, 2))
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert (
        str(clone) == str(err) == "/data/f.h5: key 'tensor': expected shape (N, T, X), found (1, 2)"
    )
