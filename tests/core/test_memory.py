"""Memory cleanup callback: when it runs and what it logs (CUDA counters faked on CPU)."""

from __future__ import annotations

import csv

import pytest

from lightstack.core.callbacks import memory
from lightstack.core.callbacks.memory import MemoryCleanup


@pytest.fixture
def fake_cuda(monkeypatch):
    """Reserved memory drops by 0.5 GB at every cleanup; counts the cleanups."""
    state = {"reserved": 8e9, "cleanups": 0}

    def free() -> int:
        state["reserved"] -= 0.5e9
        state["cleanups"] += 1
        return 7

    monkeypatch.setattr(memory, "reserved_bytes", lambda device: int(state["reserved"]))
    monkeypatch.setattr(memory, "free_memory", free)
    return state


def test_cleanup_points_and_logged_metrics(toy, tmp_path, fake_cuda):
    cfg = toy.config(
        "trainer.max_epochs=2",
        "trainer.accumulate_grad_batches=2",
        "logging.loggers=[csv]",
        "training.memory_cleanup={enabled: true, every_n_train_steps: 1}",
    )
    trainer, _ = toy.fit(cfg, tmp_path)
    callback = next(cb for cb in trainer.callbacks if isinstance(cb, MemoryCleanup))
    # 4 micro-batches per epoch, 2 optimizer steps: one cleanup per step plus one per epoch end
    points = [row["point"] for row in callback.history]
    assert points == ["train_step", "train_step", "train_epoch_end"] * 2
    assert [row["step"] for row in callback.history] == [1, 2, 2, 3, 4, 4]
    assert fake_cuda["cleanups"] == 6
    assert all(row["mem/freed_gb"] == pytest.approx(0.5) for row in callback.history)
    assert callback.history[-1]["mem/reserved_gb"] == pytest.approx(5.0)
    with open(tmp_path / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("mem/freed_gb")]
    assert len(rows) == 6 and {float(r["mem/gc_collected"]) for r in rows} == {7.0}


def test_validation_end_point_skips_sanity_check(toy, tmp_path, fake_cuda):
    callback = MemoryCleanup(points=["validation_end"])

    class Validated(toy.Module):
        def validation_step(self, batch, batch_idx):
            return None

    class Data(toy.Data):
        def val_dataloader(self):
            return self.train_dataloader()

    cfg = toy.config("trainer.max_epochs=2", "trainer.num_sanity_val_steps=1")
    toy.fit(cfg, tmp_path, Validated(cfg), Data(), callbacks=[callback])
    assert [row["point"] for row in callback.history] == ["validation_end"] * 2


def test_cpu_reports_nothing_reserved():
    import torch

    assert memory.reserved_bytes(torch.device("cpu")) == 0
    assert memory.free_memory() >= 0
