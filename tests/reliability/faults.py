"""Run the ``lightstack`` CLI with a fault injected (used by the reliability tests).

The fault is a callback added to every trainer ``build_trainer`` makes, chosen by environment:

- ``FAULT_KILL_AT_STEP=N``: SIGKILL this process at the start of the first batch after
  global step ``N`` (after any checkpoint of step ``N`` was written).
- ``FAULT_PAUSE_AT_STEP=N`` and ``FAULT_MARKER=path``: at global step ``N`` create ``path`` and
  wait (up to 60 s) until a signal arrives or ``path`` is removed, so a test can send a signal
  or start a second command mid-training.
- ``FAULT_DIE_IN_SAVE=N``: the ``N``-th ``torch.save`` writes half of its bytes and SIGKILLs
  the process (a kill in the middle of writing a checkpoint).

Usage: ``python faults.py physics train --config ...`` (the CLI's own arguments).
"""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

import lightstack.core.trainer as core_trainer
from lightstack.cli import app


class KillAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class PauseAt(Callback):
    def __init__(self, step: int, marker: Path):
        self.step = step
        self.marker = marker
        self.signalled = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step != self.step or self.marker.exists():
            return
        preemption = next(cb for cb in trainer.callbacks if type(cb).__name__ == "Preemption")
        self.marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if trainer.received_sigterm or preemption.received is not None:
                return
            if not self.marker.exists():
                return
            time.sleep(0.05)


def fault_callbacks() -> list[Callback]:
    if "FAULT_KILL_AT_STEP" in os.environ:
        return [KillAt(int(os.environ["FAULT_KILL_AT_STEP"]))]
    if "FAULT_PAUSE_AT_STEP" in os.environ:
        return [PauseAt(int(os.environ["FAULT_PAUSE_AT_STEP"]), Path(os.environ["FAULT_MARKER"]))]
    return []


def die_in_save(n: int) -> None:
    real_save = torch.save
    calls = 0

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls < n:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


_build_callbacks = core_trainer.build_callbacks


def build_callbacks_with_faults(*args: Any, **kwargs: Any) -> list[Callback]:
    return _build_callbacks(*args, **kwargs) + fault_callbacks()


core_trainer.build_callbacks = build_callbacks_with_faults
if "FAULT_DIE_IN_SAVE" in os.environ:
    die_in_save(int(os.environ["FAULT_DIE_IN_SAVE"]))

if __name__ == "__main__":
    app(prog_name="lightstack")
