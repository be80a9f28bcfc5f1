"""Atomic outputs: a kill or an error while writing leaves the previous file whole.

Checkpoints, configs, metrics and reports go through ``core.io.atomic_path`` (a temporary file
beside the target, renamed over it); the audit test keeps new code from writing around it.
"""

from __future__ import annotations

import ast
import json
import os
import re

import pytest
import torch
from reliability_support import SRC, assert_same_weights, final_weights, run_cli

from lightstack.core import io as core_io
from lightstack.core.checkpoints import AtomicCheckpointIO, load_checkpoint
from lightstack.core.io import atomic_write_json


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(reference, tiny_yaml, tmp_path):
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    # Saves: last.ckpt at steps 2 and 4, then the kill half-way through the one of step 6.
    killed = run_cli(
        "physics", "train", "--config", tiny_yaml, "--run-dir", "run",
        env={"FAULT_DIE_IN_SAVE": "3"}, cwd=tmp_path,
    )  # fmt: skip
    assert killed.returncode == -9, killed.output
    torn = list(ckpt_dir.glob(".last.ckpt.*.tmp"))
    assert len(torn) == 1 and torn[0].stat().st_size > 0  # the half-written temporary
    assert sorted(p.name for p in ckpt_dir.glob("*.ckpt")) == ["last.ckpt"]
    assert load_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 4
    resumed = run_cli("physics", "train", "--config", tiny_yaml, "--run-dir", "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.output
    assert_same_weights(final_weights(run_dir), reference.weights())


def _torn_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise RuntimeError("interrupted while writing")


def test_error_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "lightstack": {}}, path)
    monkeypatch.setattr(torch, "save", _torn_save)
    with pytest.raises(OSError, match=r"cannot write checkpoint .*last\.ckpt: interrupted"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "lightstack": {}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_error_while_writing_json_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "train_metrics.json"
    atomic_write_json(path, {"val/nrmse": 0.5})

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(core_io.os, "fsync", fail)
    with pytest.raises(OSError, match=r"Input/output error: '.*train_metrics\.json'"):
        atomic_write_json(path, {"val/nrmse": 0.25})
    assert json.loads(path.read_text()) == {"val/nrmse": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["train_metrics.json"]


# Writes that may bypass core.io, each with the reason. Anything else that writes a file must
# write into the temporary path of ``atomic_path`` (named ``tmp``), or into a handle or buffer
# opened on it (``fh``, ``buf``).
ALLOWED = {
    ("core/run.py", "probe"): "a writability probe, deleted at once",
}
SAFE_TARGETS = re.compile(r"\btmp\b|^(fh|buf|buffer)$")


def _write_target(call: ast.Call) -> ast.expr | None:
    """The file a call writes to, or None when the call writes no file."""
    func = call.func
    name = ast.unparse(func)
    args = call.args
    mode = next(
        (k.value for k in call.keywords if k.arg == "mode"), args[1] if len(args) > 1 else None
    )
    writes_mode = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes"):
        return func.value
    if isinstance(func, ast.Attribute) and func.attr == "savefig" and args:
        return args[0]
    if name in ("torch.save", "json.dump") and len(args) > 1:
        return args[1]
    if name == "np.save" and args:
        return args[0]
    if name in ("open", "h5py.File", "av.open") and args and writes_mode:
        return args[0]
    return None


def test_every_file_write_in_the_package_is_atomic():
    package = SRC / "lightstack"
    bypass = []
    for source in sorted(package.rglob("*.py")):
        rel = source.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(source.read_text())):
            target = _write_target(node) if isinstance(node, ast.Call) else None
            if target is None or rel == "core/io.py":
                continue
            text = ast.unparse(target)
            if SAFE_TARGETS.search(text) or any(rel == f and key in text for f, key in ALLOWED):
                continue
            bypass.append(f"{rel}:{node.lineno}: {ast.unparse(node)}")
    assert not bypass, "writes that bypass core.io.atomic_path:\n" + "\n".join(bypass)


def test_atomic_path_leaves_no_temporary_on_success(tmp_path):
    with core_io.atomic_path(tmp_path / "report.html") as tmp:
        tmp.write_text("<html></html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert os.stat(tmp_path / "report.html").st_size == len("<html></html>")


def test_audit_finds_a_direct_write():
    def target(code: str) -> str | None:
        found = _write_target(ast.parse(code).body[0].value)
        return None if found is None else ast.unparse(found)

    assert target('fig.savefig(out / "plot.png")') == "out / 'plot.png'"
    assert target('open(path, "w")') == "path"
    assert target('(run / "x.json").write_text(text)') == "run / 'x.json'"
    assert target('open(path, "rb")') is None
    assert target("torch.save(state, tmp)") == "tmp"
