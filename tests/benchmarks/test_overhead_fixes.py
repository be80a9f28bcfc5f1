"""Per-step overhead fixes: no host sync in the operator's training step, per-task nRMSE as
device-side epoch means, NaN guard verdicts on the device for fused AdamW, progress bars that
read metrics at their own rate."""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from lightning.pytorch.loggers import CSVLogger

from lightstack.core.callbacks.nan_guard import NaNGuard, NonFiniteError
from lightstack.core.callbacks.progress import ThrottledRichProgressBar, ThrottledTQDMProgressBar
from lightstack.core.callbacks.throughput import ThroughputMonitor
from lightstack.physics.eval.metrics import nrmse_per_sample
from lightstack.physics.stages.operator import MaskedMean, OperatorStage
from lightstack.physics.train import train, with_data_shapes
from optimizer_snapshot import Snapshot

torch.set_num_threads(1)


# --- MaskedMean --------------------------------------------------------------------------------
def test_masked_mean_averages_only_masked_values_across_updates():
    metric = MaskedMean()
    metric.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([True, False, True]))
    metric.update(torch.tensor([10.0, 20.0]), torch.tensor([False, True]))
    assert metric.compute().item() == pytest.approx((1 + 3 + 20) / 3)
    metric.reset()
    metric.update(torch.tensor([5.0]), torch.tensor([True]))
    assert metric.compute().item() == 5.0


def test_masked_mean_keeps_a_float32_sum_in_a_bf16_module():
    metric = MaskedMean().to(torch.bfloat16)  # what precision bf16-true does to the module
    values = torch.full((4,), 0.05, dtype=torch.bfloat16)
    for _ in range(1000):
        metric.update(values, torch.ones(4, dtype=torch.bool))
    assert metric.total.dtype == torch.float32 and metric.count.item() == 4000
    assert metric.compute().item() == pytest.approx(float(values[0]), rel=1e-4)


def test_masked_mean_of_an_absent_group_is_nan():
    metric = MaskedMean()
    metric.update(torch.tensor([1.0]), torch.tensor([False]))
    assert math.isnan(metric.compute().item())


# --- operator stage ----------------------------------------------------------------------------
@contextmanager
def no_host_reads() -> Iterator[None]:
    """Make every Python-level device->host read of a tensor raise."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("host sync in the training step")

    names = ("__bool__", "__int__", "__float__", "item", "tolist", "cpu", "numpy")
    saved = {name: getattr(torch.Tensor, name) for name in names}
    for name in names:
        setattr(torch.Tensor, name, refuse)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def tiny_stage(cfg) -> tuple[OperatorStage, dict[str, torch.Tensor]]:
    from lightstack.physics.data.windows import PDEDataModule

    dm = PDEDataModule(cfg.data, horizon=cfg.loss.rollout_horizon)
    cfg = with_data_shapes(cfg, dm)
    stage = OperatorStage(cfg, dm.task_names)
    stage.model.set_normalization(*dm.field_stats())
    batch = next(iter(torch.utils.data.DataLoader(dm.windows("train", 2), batch_size=6)))
    batch["task"] = torch.tensor([0, 1, 0, 1, 1, 1])
    return stage, batch


def test_training_step_reads_nothing_back_from_the_device(tiny_config, burgers_file):
    cfg = tiny_config(
        "data.task_names=[a,b]", "data.max_samples=8", files=[burgers_file, burgers_file]
    )
    stage, batch = tiny_stage(cfg)
    with no_host_reads():
        loss = stage.training_step(batch, 0)
    loss.backward()
    out = stage.losses(batch)
    assert {"recon", "onestep", "rollout"} <= set(out.terms)
    weighted = sum(getattr(stage.cfg.loss, name) * value for name, value in out.terms.items())
    assert torch.allclose(out.total, weighted)
    # the per-task metrics got this batch's samples: task a 2, task b 4
    assert [m.count.item() for m in stage.train_task_nrmse] == [2, 4]


def test_per_task_train_nrmse_reaches_the_history(tiny_config, burgers_file, tmp_path):
    cfg = tiny_config(
        "data.task_names=[a,b]",
        "data.max_samples=8",
        "data.task_weights={a: 1.0, b: 0.0}",
        files=[burgers_file, burgers_file],
    )
    result = train(cfg, tmp_path / "run")
    (row,) = json.loads((tmp_path / "run" / "history.json").read_text())
    assert 0 < row["train/a/nrmse"] < 10 and row["train/a/nrmse"] == result.metrics["train/a/nrmse"]
    assert row["train/b/nrmse"] is None  # task b drew no window (weight 0): NaN, written as null
    assert {"train/L_recon", "train/L_onestep", "train/loss"} <= set(row)


# --- NaN guard with a fused AdamW -----------------------------------------------------------------
class Toy(L.LightningModule):
    """Linear regression with a fused AdamW; at ``bad_batch`` the loss or a gradient is NaN."""

    def __init__(self, bad_batch: int = 2, bad: str = "loss"):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.bad_batch, self.bad = bad_batch, bad

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        if batch_idx != self.bad_batch:
            return loss
        if self.bad == "loss":
            return loss * float("nan")
        return loss + (self.layer.weight.sum() * 0).sqrt()  # sqrt'(0) = inf, times 0: NaN grad

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1, fused=True)


def fit_toy(module: L.LightningModule, callbacks: list[Callback], device: str = "cpu"):
    trainer = L.Trainer(
        accelerator=device,
        max_epochs=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = torch.utils.data.TensorDataset(torch.randn(12, 3))
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


@pytest.mark.parametrize(("bad", "what"), [("loss", "train/loss"), ("grad", "layer.weight")])
def test_fused_adamw_skips_a_bad_step_on_the_device(bad, what):
    snapshot = Snapshot(index=2)
    guard = NaNGuard("skip", 5)
    with pytest.warns(UserWarning, match=f"{what}.* at global step 2 .*skipped \\(1 of at most"):
        trainer = fit_toy(Toy(bad=bad), [guard, snapshot])
    assert len(snapshot.before) == 8  # weight, bias; step, exp_avg, exp_avg_sq of each
    assert all(torch.equal(a, b) for a, b in zip(snapshot.before, snapshot.after, strict=True))
    assert guard.skipped == 1 and trainer.callback_metrics["train/nan_skipped_steps"] == 1.0
    assert not hasattr(trainer.optimizers[0], "found_inf")  # nothing stale left behind
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_fused_adamw_stop_names_the_step():
    with pytest.raises(NonFiniteError, match=r"train/loss is NaN/Inf at global step 2 \(epoch 0"):
        fit_toy(Toy(), [NaNGuard("stop")])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_verdict_arrives_later_and_the_step_was_skipped():
    snapshot = Snapshot(index=2)
    guard = NaNGuard("skip", 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_toy(Toy(), [guard, snapshot], device="gpu")
    assert [str(w.message) for w in caught if "skipped" in str(w.message)] == [
        "train/loss is NaN/Inf at global step 2 (epoch 0, batch 2): optimizer step skipped "
        "(1 of at most 5)"
    ]
    assert all(torch.equal(a, b) for a, b in zip(snapshot.before, snapshot.after, strict=True))


# --- progress bars ------------------------------------------------------------------------------
@pytest.fixture
def metric_reads(monkeypatch) -> list[int]:
    """Counts reads of the trainer's progress-bar metrics through ``ProgressBar.get_metrics``."""
    reads: list[int] = []
    original = ProgressBar.get_metrics

    def counted(self, trainer, pl_module):
        reads.append(trainer.global_step)
        return original(self, trainer, pl_module)

    monkeypatch.setattr(ProgressBar, "get_metrics", counted)
    return reads


class Logs(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True)  # no per-step prog_bar sync
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("bar", [ThrottledRichProgressBar, ThrottledTQDMProgressBar])
def test_bars_read_metrics_once_per_interval_and_at_epoch_end(bar, metric_reads, tmp_path):
    progress = bar(metrics_interval_s=3600)
    trainer = fit_toy_with_bar(progress, epochs=2, samples=40, root=tmp_path)
    # 20 batches per epoch: one read at the first batch, one at each epoch end
    assert metric_reads == [1, 20, 40]
    # train/loss is on the bar although it was logged without prog_bar, the last step's value
    # and the epoch mean under their own names
    shown = progress.get_metrics(trainer, trainer.lightning_module)
    logged = trainer.callback_metrics
    assert shown["train/loss_epoch"] == pytest.approx(float(logged["train/loss_epoch"]))
    assert shown["train/loss_step"] == pytest.approx(float(logged["train/loss_step"]))
    assert shown["train/loss_step"] != shown["train/loss_epoch"]
    assert "train/loss" not in shown
    assert trainer.progress_bar_metrics == {}  # nothing forced a per-step conversion


def test_a_zero_interval_reads_every_batch(metric_reads):
    bar = ThrottledTQDMProgressBar(metrics_interval_s=0)
    trainer = fit_toy_with_bar(bar)
    assert len(metric_reads) == 6 + 1 and trainer.global_step == 6


def fit_toy_with_bar(
    bar: ProgressBar, epochs: int = 1, samples: int = 12, root: Path | None = None
) -> L.Trainer:
    """``Logs`` fitted for ``epochs`` over ``samples`` rows in batches of 2, ``bar`` its only
    callback."""
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[bar],
        logger=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    data = torch.utils.data.TensorDataset(torch.randn(samples, 3))
    trainer.fit(Logs(), torch.utils.data.DataLoader(data, batch_size=2))
    return trainer


def test_logged_terms_equal_what_per_step_logging_would_give(tiny_config, tmp_path, monkeypatch):
    """Step values at the logging steps and epoch means over every batch, as ``self.log`` of a
    tensor at every step gave, although Lightning only sees the metrics now and then."""
    seen: list[tuple[int, int, dict[str, float], list[float]]] = []
    original = OperatorStage.losses

    def recording(self, batch):
        out = original(self, batch)
        nrmse = nrmse_per_sample(*out.onestep).tolist()
        terms = {k: float(v) for k, v in out.terms.items()}
        seen.append((self.current_epoch, self.global_step, terms, nrmse))
        return out

    monkeypatch.setattr(OperatorStage, "losses", recording)
    cfg = tiny_config("trainer.max_epochs=2", "trainer.log_every_n_steps=3", "data.max_samples=8")
    train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for epoch, row in enumerate(history):
        steps = [s for s in seen if s[0] == epoch]
        for name in ("recon", "onestep", "rollout"):
            mean = sum(s[2][name] for s in steps) / len(steps)
            assert row[f"train/L_{name}"] == pytest.approx(mean, rel=1e-5)
        per_sample = [v for s in steps for v in s[3]]
        assert row["train/burgers/nrmse"] == pytest.approx(sum(per_sample) / len(per_sample))
    rows = list(csv.DictReader((tmp_path / "run" / "logs" / "metrics.csv").open()))
    logged = {
        int(r["step"]): float(r["train/L_recon_step"]) for r in rows if r["train/L_recon_step"]
    }
    assert sorted(logged) == [s for s in range(2, len(seen), 3)]  # Lightning's logging steps
    for step, value in logged.items():
        assert value == pytest.approx(seen[step][2]["recon"], rel=1e-5)


def test_throughput_values_are_logged_from_host_tensors(tmp_path):
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[ThroughputMonitor(window=2)],
        logger=CSVLogger(tmp_path, name="", version=""),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    data = torch.utils.data.TensorDataset(torch.randn(12, 3))
    trainer.fit(Logs(), torch.utils.data.DataLoader(data, batch_size=2))
    assert trainer.callback_metrics["perf/step_ms"].device.type == "cpu"
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    values = [float(r["perf/samples_per_s"]) for r in rows if r.get("perf/samples_per_s")]
    # two windows (batches 1-2 and 3-4); Lightning repeats a callback's step value until the next
    assert len(set(values)) == 2 and all(v > 0 for v in values)
