"""The cosine schedule ends when ``trainer.max_time`` stops the run, not at ``max_epochs``."""

from __future__ import annotations

import pytest

from lightstack.core.callbacks.time_budget import TimeBudgetSchedule
from lightstack.core.optim import WarmupCosine


def _schedule(trainer) -> WarmupCosine:
    (config,) = trainer.lr_scheduler_configs
    (fn,) = config.scheduler.lr_lambdas
    return fn


def test_time_capped_run_anneals_by_the_deadline(toy, tmp_path):
    cfg = toy.config(
        "trainer.max_epochs=100000",
        "trainer.max_time='00:00:00:02'",
        "optimizer.scheduler={name: cosine, min_lr_ratio: 0.01}",
    )
    trainer, _ = toy.fit(cfg, tmp_path)
    schedule = _schedule(trainer)
    steps = trainer.global_step
    assert steps > 50  # enough steps for the projection to settle
    assert schedule.planned_steps == 100000 * 4
    # the schedule was cut to about the steps the 2 s allowed
    assert 0.5 * steps < schedule.total_steps < 2 * steps
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr < 0.5 * cfg.optimizer.lr


def test_step_bound_run_keeps_its_schedule(toy, tmp_path):
    cfg = toy.config(
        "trainer.max_epochs=3",
        "trainer.max_time='00:01:00:00'",
        "optimizer.scheduler={name: cosine}",
    )
    trainer, _ = toy.fit(cfg, tmp_path)
    assert any(isinstance(cb, TimeBudgetSchedule) for cb in trainer.callbacks)
    schedule = _schedule(trainer)
    assert schedule.total_steps == schedule.planned_steps == 12
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_no_time_cap_no_callback(toy, tmp_path):
    trainer, _ = toy.fit(toy.config(), tmp_path)
    assert not any(isinstance(cb, TimeBudgetSchedule) for cb in trainer.callbacks)
