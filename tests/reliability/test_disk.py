"""A full disk or an output directory that cannot be written: one error naming the file, the
previous file intact, no temporary files left behind."""

from __future__ import annotations

import builtins
import errno
import io
import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import FAULTS, cli_env

from lightstack.core import checkpoints as core_checkpoints
from lightstack.core import io as core_io
from lightstack.core.checkpoints import load_checkpoint
from lightstack.core.io import atomic_write_json
from lightstack.physics.train import train


class FullDisk(io.RawIOBase):
    """A writable file that takes ``room`` bytes and then fails with ENOSPC."""

    def __init__(self, path: Path, room: int = 64):
        self.fh = open(path, "wb")  # noqa: SIM115 (closed in close())
        self.room = room

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fh.fileno()

    def write(self, data) -> int:
        taken = bytes(data[: self.room])
        self.room -= len(taken)
        self.fh.write(taken)
        if len(taken) < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return len(taken)

    def close(self) -> None:
        self.fh.close()
        super().close()


def full_disk_open(path, mode="r", *args, **kwargs):
    """``open`` on a full disk: reading works, writing fails after a few bytes."""
    if "w" not in mode:
        return builtins.open(path, mode, *args, **kwargs)
    return FullDisk(Path(path))


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tiny_config, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    train(tiny_config("trainer.max_epochs=1"), run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    monkeypatch.setattr(core_checkpoints, "open", full_disk_open, raising=False)
    with pytest.raises(OSError, match=r"No space left on device: '.*last\.ckpt'") as info:
        train(tiny_config("trainer.max_epochs=2"), run_dir)  # resumes, then fails to save
    assert info.value.errno == errno.ENOSPC
    assert last.read_bytes() == before and load_checkpoint(last)["global_step"] == 10
    assert no_temporaries(run_dir)


def test_disk_full_while_writing_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"rollout_nrmse": 0.1})
    monkeypatch.setattr(core_io, "open", full_disk_open, raising=False)
    with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.json'"):
        atomic_write_json(path, {"rollout_nrmse": 0.2, "padding": "x" * 1000})
    assert json.loads(path.read_text()) == {"rollout_nrmse": 0.1}
    assert no_temporaries(tmp_path)


def test_read_only_folder_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(core_io.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match=r"Read-only file system: '.*summary\.json'"):
        atomic_write_json(tmp_path / "summary.json", {})
    assert list(tmp_path.iterdir()) == []


def test_run_directory_that_cannot_be_created_is_named(tiny_config, tmp_path):
    # A run directory below a regular file cannot be created, even by root (unlike chmod).
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"runs/exp1"):
        train(tiny_config(), blocker / "exp1")
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_generate_on_a_full_disk_prints_one_line(tmp_path):
    # A file-size limit makes HDF5's writes fail the way a full disk does (EFBIG for ENOSPC).
    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    out = tmp_path / "data" / "b.hdf5"
    args = ["physics", "generate", "burgers1d", "--out", out, "--samples", "16", "--nx", "64"]
    proc = subprocess.run(
        [sys.executable, str(FAULTS), *map(str, args)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=small_files,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"error: [Errno 27] File too large: '{out}'" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and "RuntimeError" not in proc.stderr
    assert list(out.parent.iterdir()) == []  # no partial file, no temporary
