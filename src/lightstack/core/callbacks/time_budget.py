"""Fit the LR schedule into ``trainer.max_time`` when the clock, not the step count, ends a run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Timer

from lightstack.core.callbacks.steps import EveryNOptimizerSteps
from lightstack.core.optim import WarmupCosine


class TimeBudgetSchedule(Callback):
    """Shorten the cosine schedule so it ends when ``max_time`` will stop training.

    The schedule's length comes from ``max_epochs``/``max_steps``. When a wall-clock cap stops the
    run first, the learning rate would still be high at the end, and the last, low-LR steps are the
    ones that buy most accuracy. Every ``every_n_steps`` optimizer steps this callback projects the
    step at which the time runs out from the pace so far (validation included, since it spends
    the same budget) and sets every ``WarmupCosine`` schedule to end there, never past the
    length planned from the step budget. The projection is made on global rank 0 and broadcast,
    so all processes keep the same learning rate.
    """

    def __init__(self, every_n_steps: int = 25):
        self._trigger = EveryNOptimizerSteps(every_n_steps)
        self._first_step: int | None = None
        self._first_elapsed = 0.0

    @staticmethod
    def _timer(trainer: L.Trainer) -> Timer | None:
        timers = [c for c in trainer.callbacks if isinstance(c, Timer) and c._duration is not None]
        return timers[0] if timers else None

    @staticmethod
    def _schedules(trainer: L.Trainer) -> list[WarmupCosine]:
        return [
            fn
            for config in trainer.lr_scheduler_configs
            for fn in getattr(config.scheduler, "lr_lambdas", [])
            if isinstance(fn, WarmupCosine)
        ]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = self._timer(trainer)
        self._first_step = trainer.global_step
        self._first_elapsed = timer.time_elapsed() if timer else 0.0

    def projected_total_steps(self, trainer: L.Trainer) -> int | None:
        """The optimizer step at which ``max_time`` will stop training, at this run's pace."""
        timer = self._timer(trainer)
        if timer is None or self._first_step is None:
            return None
        steps = trainer.global_step - self._first_step
        seconds = timer.time_elapsed() - self._first_elapsed
        remaining = timer.time_remaining()
        if steps <= 0 or seconds <= 0 or remaining is None:
            return None
        return trainer.global_step + int(max(0.0, remaining) * steps / seconds)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._trigger.due(trainer.global_step):
            return
        schedules = self._schedules(trainer)
        if not schedules:
            return
        projected = self.projected_total_steps(trainer) if trainer.is_global_zero else None
        projected = trainer.strategy.broadcast(projected, src=0)
        if projected is None:
            return
        for schedule in schedules:
            schedule.total_steps = max(1, min(schedule.planned_steps, projected))
