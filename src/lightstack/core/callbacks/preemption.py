"""Keeping ``last.ckpt`` fresh: every N optimizer steps, and on a stop (SIGTERM, SIGUSR1, Ctrl-C).

``StepCheckpoint`` writes ``last.ckpt`` every ``checkpoint.every_n_train_steps`` steps, so a
killed run loses at most that many steps. ``Preemption`` saves it and exits when the run is
asked to stop.

Lightning notes a SIGTERM and raises ``SIGTERMException`` (a ``SystemExit``) once the current
batch is done; ``Preemption.on_exception`` then writes ``<dirpath>/last.ckpt`` and prints what
happened and how to resume. SLURM warns a job before its time limit with ``SIGUSR1`` (sbatch
``--signal=USR1@90``); Lightning's own handler for it would save a separate ``hpc_ckpt_*.ckpt``
from inside the signal handler, in the middle of a step. ``Preemption`` installs its handler
first (Lightning then leaves the signal alone), only notes the signal, and stops at the next
batch boundary like SIGTERM, so the checkpoint is consistent and is the one ``--resume auto``
finds. Under SLURM the job is then requeued with ``scontrol requeue`` (as Lightning's
``SLURMEnvironment(auto_requeue=True)`` does), and the requeued job resumes from it.

Ctrl-C (SIGINT) is treated the same way. Left alone, Python raises ``KeyboardInterrupt`` in
the middle of whatever runs, possibly an optimizer step, and Lightning's handler for it only
tears down and exits with status 1; a checkpoint written from there could hold a half-applied
step. So the first Ctrl-C is only noted and the run stops, saved, at the end of the batch; a
second Ctrl-C raises ``KeyboardInterrupt`` at once (nothing is saved, the last checkpoint stays).

The process exits with status ``128 + signal number`` (143 for SIGTERM, 138 for SIGUSR1, 130
for Ctrl-C), the status of a process ended by that signal, so scripts and schedulers see that
training did not finish. Under DDP every process stops at the same step: the decision is
reduced across ranks. Paths are made absolute, as ``ModelCheckpoint`` keeps its folder: it
takes a ``last.ckpt`` recorded under another spelling for a different file and would write
``last-v1.ckpt`` beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightstack.core.callbacks.steps import EveryNOptimizerSteps

LAST_NAME = "last.ckpt"


class Preemption(Callback):
    """Save ``dirpath/last.ckpt`` and exit when the run is asked to stop by a signal."""

    def __init__(
        self,
        dirpath: str | Path,
        signals: tuple[signal.Signals, ...] = (signal.SIGUSR1, signal.SIGINT),
    ):
        self.dirpath = Path(dirpath).resolve()
        self.signals = signals
        self.received: int | None = None
        self._announce = True
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    # --- signal handling ---------------------------------------------------------------------
    def _note(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:
            return  # a DataLoader worker forked with this handler: the main process decides
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without saving
        self.received = signum
        if signum == signal.SIGINT and self._announce:
            print(
                "\nCtrl-C: stopping after this batch and saving last.ckpt (press again to stop "
                "at once without saving)",
                file=sys.stderr,
                flush=True,
            )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.received = None
        self._announce = trainer.is_global_zero
        self._pid = os.getpid()
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    # --- stopping ----------------------------------------------------------------------------
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            last = self.dirpath / LAST_NAME
            where = f"the last checkpoint {last}" if last.is_file() else "no checkpoint yet"
            print(
                f"\nstopped at once: nothing saved; {where}. Run the same command with the same "
                "--run-dir to resume.",
                file=sys.stderr,
                flush=True,
            )
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        signum = self.received or signal.SIGTERM
        path = save_last(trainer, self.dirpath)
        requeued = signum == signal.SIGUSR1 and trainer.is_global_zero and _requeue_slurm_job()
        if trainer.is_global_zero:
            name = signal.Signals(signum).name
            print(
                f"\n{name} received: training stopped at global step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}); checkpoint saved to {path}."
                + (" The SLURM job was requeued." if requeued else "")
                + " Run the same command with the same --run-dir to resume.",
                file=sys.stderr,
                flush=True,
            )
        exception.code = 128 + int(signum)


def save_last(trainer: L.Trainer, dirpath: Path) -> Path:
    """Write ``dirpath/last.ckpt`` (all processes take part) and return its path."""
    path = Path(dirpath).resolve() / LAST_NAME
    ckpt_cb = trainer.checkpoint_callback
    if isinstance(ckpt_cb, ModelCheckpoint):
        # as ModelCheckpoint does before it saves "last": the file records that it is the last
        ckpt_cb.last_model_path = str(path)
    trainer.save_checkpoint(path, weights_only=False)
    return path


class StepCheckpoint(Checkpoint):
    """Write ``dirpath/last.ckpt`` every ``every_n_train_steps`` optimizer steps.

    Lightning's ``ModelCheckpoint(every_n_train_steps=...)`` with a validation monitor waits
    for the first validation before it saves anything and ranks mid-epoch weights with a stale
    metric; this callback only keeps the resume point fresh and leaves "best" to validation.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int):
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.dirpath = Path(dirpath).resolve()
        self.every_n_train_steps = every_n_train_steps
        self._every = EveryNOptimizerSteps(every_n_train_steps)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._every.due(trainer.global_step):
            save_last(trainer, self.dirpath)


def _requeue_slurm_job() -> bool:
    """``scontrol requeue`` this SLURM job (array task included); False outside SLURM."""
    if not SLURMEnvironment.detect():
        return False
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (
        f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        if array_job
        else os.environ.get("SLURM_JOB_ID")
    )
    if not job:
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], check=False, capture_output=True)
    except OSError:
        return False
    return result.returncode == 0
