"""Bad PDEBench data: missing files, missing keys, wrong shapes, NaN values and truncated files
each give one ``PDEBenchError`` naming the file and the key (and the sample), before any run
directory is written when it can be known up front."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from reliability_support import write_tiny_pdebench
from typer.testing import CliRunner

from lightstack.cli import app
from lightstack.physics.data.pdebench import PDEBenchError, check_finite
from lightstack.physics.data.windows import split_indices
from lightstack.physics.train import train


def with_data(tiny_config, path: Path, *overrides: str):
    return tiny_config(f"data.train_files={json.dumps([str(path)])}", *overrides)


def damaged(tmp_path: Path, edit) -> Path:
    """A copy of the tiny file, opened read-write and passed to ``edit``."""
    path = write_tiny_pdebench(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def expect(
    tiny_config, tmp_path: Path, data: Path, key: str, found: str, written: tuple[str, ...] = ()
) -> PDEBenchError:
    """Training on ``data`` fails naming it and ``key``; the run directory holds ``written``."""
    run_dir = tmp_path / "run"
    with pytest.raises(PDEBenchError) as info:
        train(with_data(tiny_config, data), run_dir)
    error = info.value
    assert error.path == data and error.key == key, str(error)
    assert found in str(error)
    assert str(data) in str(error)
    found_files = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
    assert found_files == list(written)
    return error


def test_missing_file(tiny_config, tmp_path):
    expect(tiny_config, tmp_path, tmp_path / "nope.h5", "(file)", "no such file")


def test_missing_coordinate(tiny_config, tmp_path):
    data = damaged(tmp_path, lambda f: f.__delitem__("x-coordinate"))
    expect(tiny_config, tmp_path, data, "x-coordinate", "missing")


def test_coordinate_of_the_wrong_length(tiny_config, tmp_path):
    def shorten(f: h5py.File) -> None:
        t = f["t-coordinate"][:3]
        del f["t-coordinate"]
        f["t-coordinate"] = t

    data = damaged(tmp_path, shorten)
    error = expect(tiny_config, tmp_path, data, "t-coordinate", "found (3,)")
    assert "(7,) or (6,)" in error.expected


def test_tensor_of_the_wrong_rank(tiny_config, tmp_path):
    def flatten(f: h5py.File) -> None:
        u = f["tensor"][:, 0]
        del f["tensor"]
        f["tensor"] = u

    expect(tiny_config, tmp_path, damaged(tmp_path, flatten), "tensor", "found (12, 16)")


def test_not_a_pdebench_layout(tiny_config, tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 3))
    expect(tiny_config, tmp_path, path, "tensor", "keys ['images']")


def test_truncated_file(tiny_config, tmp_path):
    path = write_tiny_pdebench(tmp_path / "cut.h5")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    expect(tiny_config, tmp_path, path, "(file)", "unreadable")


def test_nan_in_a_sample_used_for_the_statistics(tiny_config, tmp_path):
    first_train = int(split_indices(12, 0.2, 0.0, 0).train[0])

    def poison(f: h5py.File) -> None:
        f["tensor"][first_train, 2, 5] = np.nan

    data = damaged(tmp_path, poison)
    # the statistics are read before the run directory is created: nothing is written
    error = expect(tiny_config, tmp_path, data, "tensor", "finite values")
    assert f"NaN/Inf in sample {first_train}" in str(error)


def test_nan_found_during_training_is_named_and_checkpoints_stay(tiny_config, tmp_path):
    last_train = int(split_indices(12, 0.2, 0.0, 0).train[-1])

    def poison(f: h5py.File) -> None:
        f["tensor"][last_train, 4, 0] = np.inf

    data = damaged(tmp_path, poison)
    cfg = with_data(tiny_config, data, "data.stats_samples=1")
    with pytest.raises(PDEBenchError, match=rf"key 'tensor'.*NaN/Inf in sample {last_train}"):
        train(cfg, tmp_path / "run")
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        assert ckpt.stat().st_size > 0


def test_cli_reports_bad_data_in_one_message(tiny_yaml, tmp_path):
    run_dir = tmp_path / "run"
    args = ["physics", "train", "--config", tiny_yaml, "--data", tmp_path / "gone.h5"]
    result = CliRunner().invoke(app, [*map(str, args), "--run-dir", str(run_dir)])
    assert result.exit_code == 1
    output = "".join(result.output.split())
    assert "".join(f"{tmp_path / 'gone.h5'}: key '(file)'".split()) in output
    assert "Traceback" not in result.output and not run_dir.exists()


def test_nan_in_a_parameter_attribute_used_as_input(tiny_config, tmp_path):
    data = damaged(tmp_path, lambda f: f.attrs.__setitem__("Nu", np.nan))
    run_dir = tmp_path / "run"
    with pytest.raises(PDEBenchError, match=r"key 'attrs/Nu': expected a finite number") as info:
        train(with_data(tiny_config, data, "data.param_keys=[Nu]"), run_dir)
    assert info.value.path == data
    assert not (run_dir / "checkpoints").exists()
    result = CliRunner().invoke(app, ["physics", "inspect", str(data)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"{data}: key 'attrs/Nu': expected a finite number" in text


def test_a_damaged_compressed_chunk_is_named(tiny_config, tmp_path):
    path = tmp_path / "gz.h5"
    values = np.random.default_rng(0).standard_normal((12, 6, 16)).astype(np.float32)
    write_tiny_pdebench(path)
    with h5py.File(path, "r+") as f:
        del f["tensor"]
        f.create_dataset("tensor", data=values, chunks=(1, 6, 16), compression="gzip")
        chunk = f["tensor"].id.get_chunk_info(0)
    with open(path, "r+b") as fh:  # overwrite the middle of the first compressed chunk
        fh.seek(chunk.byte_offset + chunk.size // 2)
        fh.write(b"\xff" * 16)
    result = CliRunner().invoke(app, ["physics", "inspect", str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert f"{path}: key 'tensor': expected readable data, found damaged" in text
    expect(tiny_config, tmp_path, path, "tensor", "filter returned failure during read")
    with pytest.raises(PDEBenchError, match=r"key 'tensor': .* damaged data in samples 0\.\.11"):
        check_finite(path)
