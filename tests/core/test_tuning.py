"""Batch-size and LR tuning through Lightning's Tuner, written into the run directory."""

from __future__ import annotations

import json

import pytest
import yaml

from lightstack.core.config import apply_updates, save_config
from lightstack.core.trainer import build_trainer
from lightstack.core.tuning import tune


def run(toy, tmp_path, *overrides, n=64, batch_size=4, lr=False, bs=False):
    cfg = toy.config(f"data.batch_size={batch_size}", *overrides)
    save_config(cfg, tmp_path / "config.yaml")  # as run_fit writes it (write_run_config)
    module, data = toy.Module(cfg), toy.Data(n=n, batch_size=batch_size)
    trainer = build_trainer(cfg, tmp_path, "train/loss", module=module)
    return cfg, data, tune(trainer, module, data, cfg, tmp_path, batch_size=bs, lr=lr)


def test_batch_size_search_updates_datamodule_and_resolved_config(toy, tmp_path):
    cfg, data, updates = run(toy, tmp_path, "training.tune.max_trials=3", bs=True)
    # no OOM on CPU: 4 -> 8 -> 16 in 3 trials, less binsearch's 5 % safety margin
    assert updates == {"data.batch_size": 15} and data.batch_size == 15
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["data"]["batch_size"] == 15
    report = json.loads((tmp_path / "tuning.json").read_text())
    assert report["batch_size"] == {"start": 4, "found": 15, "mode": "binsearch"}
    assert apply_updates(cfg, updates).data.batch_size == 15


def test_lr_finder_writes_plot_and_suggestion(toy, tmp_path):
    overrides = ("training.tune.lr_steps=30", "training.tune.lr_min=1e-5", "trainer.max_epochs=5")
    cfg, _, updates = run(toy, tmp_path, *overrides, n=256, batch_size=8, lr=True)
    assert set(updates) == {"optimizer.lr"} and 1e-5 <= updates["optimizer.lr"] <= 1.0
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    report = json.loads((tmp_path / "tuning.json").read_text())
    assert len(report["lr"]["lrs"]) == len(report["lr"]["losses"]) == 30
    assert report["lr"]["suggestion"] == updates["optimizer.lr"]
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert resolved["optimizer"]["lr"] == updates["optimizer.lr"] != cfg.optimizer.lr


def test_nothing_requested_changes_nothing(toy, tmp_path):
    assert run(toy, tmp_path)[2] == {}
    assert not (tmp_path / "tuning.json").exists()


def test_refusals(toy, tmp_path):
    with pytest.raises(ValueError, match=r"--tune-lr supports optimizer\.name=adamw only"):
        run(toy, tmp_path, "optimizer.name=muon", lr=True)
    with pytest.raises(ValueError, match=r"tune with trainer\.devices=1 trainer\.num_nodes=1"):
        run(toy, tmp_path, "trainer.num_nodes=2", bs=True)

    class WithBatchSize(toy.Module):
        batch_size = 4

    cfg = toy.config()
    module = WithBatchSize(cfg)
    trainer = build_trainer(cfg, tmp_path, "train/loss")
    with pytest.raises(TypeError, match="would change it instead of the datamodule's"):
        tune(trainer, module, toy.Data(), cfg, tmp_path, batch_size=True, lr=False)
