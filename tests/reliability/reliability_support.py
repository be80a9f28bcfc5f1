"""Helpers of the fault tests: tiny data, CLI subprocesses with faults, weight comparison.

Training that must be compared bit for bit runs in subprocesses with the same environment
(one thread, deterministic algorithms), through ``faults.py``, which adds the fault to inject
(a SIGKILL after a given step, a pause to receive a signal) and then runs the real CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightstack.physics.data.pdebench import write_1d

SRC = Path(__file__).resolve().parents[2] / "src"
FAULTS = Path(__file__).with_name("faults.py")

# 12 samples of 6 snapshots: 10 training samples x 4 windows -> 10 batches of 4 per epoch.
TINY_YAML = """\
family: physics
name: reliability
seed: 3
data:
  train_files: [{data}]
  val_fraction: 0.2
  test_fraction: 0.0
  loader: {{batch_size: 4}}
model: {{width: 16, heads: 2, patch_size: 4, encoder_depth: 0, operator_depth: 1,
        decoder_depth: 1, dropout: 0.1}}
loss: {{rollout_horizon: 2, query_points: 8}}
optimizer: {{lr: 0.003, scheduler: {{name: cosine, warmup_steps: 3}}}}
trainer: {{accelerator: cpu, devices: 1, max_epochs: 2, deterministic: true,
          log_every_n_steps: 1}}
checkpoint: {{every_n_train_steps: 2}}
logging: {{progress_bar: none, loggers: [csv]}}
"""
STEPS_PER_EPOCH = 10


def write_tiny_pdebench(path: Path, samples: int = 12, times: int = 6, cells: int = 16) -> Path:
    """Travelling sine waves in PDEBench's 1D layout (no solver: a few milliseconds)."""
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, cells, endpoint=False, dtype=np.float32)
    t = np.linspace(0, 1, times + 1, dtype=np.float32)
    k = rng.integers(1, 4, size=(samples, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(samples, 1, 1))
    u = np.sin(2 * np.pi * k * (x[None, None] - 0.3 * t[None, :times, None]) + phase)
    write_1d(path, u.astype(np.float32), x, t, {"Nu": 0.01})
    return path


@dataclass
class CliRun:
    returncode: int
    output: str


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every CLI subprocess: one thread, the source tree, ``extra``."""
    return {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        **(extra or {}),
    }


def run_cli(
    *args: object,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    cwd: Path | None = None,
) -> CliRun:
    """``lightstack <args>`` in a fresh process (``faults.py``) in ``cwd``, ``env`` added."""
    proc = subprocess.run(
        [sys.executable, str(FAULTS), *map(str, args)],
        env=cli_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliRun(proc.returncode, proc.stdout + proc.stderr)


def start_cli(
    *args: object, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen:
    """Like ``run_cli`` but returns the running process (output piped)."""
    return subprocess.Popen(
        [sys.executable, str(FAULTS), *map(str, args)],
        env=cli_env(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a finished run's ``last.ckpt`` (and no ``-v1`` copies beside it)."""
    checkpoints = run_dir / "checkpoints"
    assert not list(checkpoints.glob("*-v[0-9]*.ckpt")), sorted(checkpoints.iterdir())
    ckpt = torch.load(checkpoints / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ: {different[:5]}"


class Pending:
    """A training command running in the background; ``weights()`` waits for it."""

    def __init__(self, proc: subprocess.Popen, run_dir: Path):
        self.proc, self.run_dir = proc, run_dir

    def weights(self) -> dict[str, torch.Tensor]:
        output, _ = self.proc.communicate(timeout=180)
        assert self.proc.returncode == 0, output
        return final_weights(self.run_dir)
