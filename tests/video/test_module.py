"""VideoModule on tiny in-memory clips (4 frames of 16x16) with a real Lightning Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader

from lightstack.core.checkpoints import META_KEY, load_checkpoint
from lightstack.core.config import validate
from lightstack.video.config import VideoConfig
from lightstack.video.data.collate import collate_views
from lightstack.video.inference import load_video_model
from lightstack.video.module import VideoModule
from lightstack.video.train import EMAWeights, build_callbacks

FRAMES, SIZE = 4, 16


def config(**sections: Any) -> VideoConfig:
    data = {"frames": FRAMES, "start": 0, "end": FRAMES, "fps": 25, "size": [SIZE, SIZE]}
    base: dict[str, Any] = {
        "family": "video",
        "data": data,
        "model": {"hidden": 32, "heads": 2, "dropout": 0.0},
        "trainer": {"accelerator": "cpu", "devices": 1},
        "optimizer": {"lr": 1e-3, "scheduler": {"name": "none"}},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return validate(VideoConfig, base, "test")


def items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Actions with 1 to 3 views, so batches carry padded views."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        views = 1 + i % 3
        out.append(
            {
                "video": torch.rand(views, 3, FRAMES, SIZE, SIZE, generator=gen),
                "action": torch.tensor(i % 8),
                "offence": torch.tensor(i % 4),
                "id": str(i),
                "n_views": views,
            }
        )
    return out


def loader(n: int = 8, batch_size: int = 4) -> DataLoader:
    return DataLoader(items(n), batch_size=batch_size, collate_fn=collate_views)


def fit(
    module: VideoModule, tmp_path: Path, epochs: int = 1, callbacks: list | None = None, **kw: Any
) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks or []),
        callbacks=callbacks or [],
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        **kw,
    )
    trainer.fit(module, loader(), loader(4))
    return trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("aggregation", ["max", "mean", "attention", "transformer"])
def test_one_training_step_updates_backbone_aggregator_and_heads(aggregation, tmp_path):
    torch.manual_seed(0)
    module = VideoModule(config(model={"aggregation": aggregation}))
    before = snapshot(module.model)
    trainer = fit(module, tmp_path, limit_train_batches=1, limit_val_batches=1)
    after = module.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    expected = {"backbone", "action_head", "offence_head"}
    if aggregation in ("attention", "transformer"):
        expected.add("aggregator")
    assert expected <= changed
    metrics = trainer.callback_metrics
    for name in (
        "train/loss",
        "val/loss",
        "val/action/acc",
        "val/offence/acc",
        "val/action/bal_acc",
        "val/offence/bal_acc",
        "val/leaderboard",
    ):
        assert name in metrics and torch.isfinite(metrics[name]), name
    mean_bal = (metrics["val/action/bal_acc"] + metrics["val/offence/bal_acc"]) / 2
    assert torch.isclose(metrics["val/leaderboard"], mean_bal)


class Recording(VideoModule):
    """Keeps the clips each step saw."""

    def __init__(self, cfg: VideoConfig):
        super().__init__(cfg)
        self.seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch["video"].clone())
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch["video"].clone())
        return super().validation_step(batch, batch_idx)


def test_training_batches_are_augmented_and_validation_batches_are_not(tmp_path):
    module = Recording(config(augment={"p": 1.0, "crop_p": 1.0, "crop_scale": [0.5, 0.6]}))
    fit(module, tmp_path, limit_train_batches=1, limit_val_batches=1)
    raw = collate_views(items(8)[:4])
    assert not torch.allclose(module.seen["train"][0], raw["video"])
    padded = ~raw["view_mask"]
    assert torch.equal(module.seen["train"][0][padded], raw["video"][padded])  # padding untouched
    assert torch.equal(module.seen["val"][0], collate_views(items(4))["video"])


def test_class_weighted_loss_needs_training_counts():
    cfg = config(loss={"kind": "weighted_ce", "class_weights": "inverse"})
    with pytest.raises(ValueError, match="needs the action class counts"):
        VideoModule(cfg)
    counts = {"action": torch.arange(1, 9), "offence": torch.tensor([5, 1, 1, 1])}
    module = VideoModule(cfg, counts)
    weight = module.criterion.criteria["offence"].weight
    assert weight[0] < weight[1] and torch.isclose(weight.mean(), torch.tensor(1.0))


class FirstEpoch(Callback):
    """Backbone weights, trainable flags and optimised parameters at the end of epoch 0."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            self.backbone = snapshot(pl_module.model.backbone)
            self.heads = snapshot(pl_module.model.action_head)
            groups = trainer.optimizers[0].param_groups
            self.optimised = {id(p) for g in groups for p in g["params"]}


@pytest.mark.parametrize("strategy", ["progressive", "adaptive", "gradient_guided"])
def test_freezing_strategies_keep_the_backbone_frozen_then_unfreeze(strategy, tmp_path):
    # adaptive: min_delta so large that nothing counts as improvement -> unfreezes at epoch 2
    cfg = config(freezing={"strategy": strategy, "patience": 1, "min_delta": 1e9})
    module = VideoModule(cfg)
    backbone, heads = snapshot(module.model.backbone), snapshot(module.model.action_head)
    first = FirstEpoch()
    fit(module, tmp_path, 3, [*build_callbacks(cfg), first], limit_train_batches=1)
    assert all(torch.equal(backbone[k], first.backbone[k]) for k in backbone)
    assert not all(torch.equal(heads[k], first.heads[k]) for k in heads)
    assert not any(id(p) in first.optimised for p in module.model.backbone.parameters())
    trainable = [p.requires_grad for p in module.model.backbone.parameters()]
    assert any(trainable) and not all(trainable)


def test_ema_weights_differ_from_raw_and_both_are_checkpointed(tmp_path):
    torch.manual_seed(0)
    cfg = config(model={"ema": True, "ema_decay": 0.5})
    module = VideoModule(cfg)
    (ema,) = build_callbacks(cfg)
    assert isinstance(ema, EMAWeights)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path, filename="last", save_last=False)
    fit(module, tmp_path, callbacks=[ema, ckpt_cb], limit_val_batches=1)

    ckpt = load_checkpoint(tmp_path / "last.ckpt")
    assert ckpt[META_KEY]["ema"] is True and ckpt[META_KEY]["family"] == "video"
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    key = "model.action_head.2.weight"
    assert not torch.equal(averaged[key], raw[key])
    expected = ema._average_model.module.state_dict()[key].cpu()
    assert torch.equal(averaged[key], expected)
    assert int(ckpt["averaging_state"]["n_averaged"]) == 2  # two batches

    ema_model, _, _ = load_video_model(tmp_path / "last.ckpt", weights="ema")
    raw_model, _, _ = load_video_model(tmp_path / "last.ckpt", weights="raw")
    assert torch.equal(ema_model.state_dict()["action_head.2.weight"], averaged[key])
    assert torch.equal(raw_model.state_dict()["action_head.2.weight"], raw[key])


def test_test_loop_logs_test_metrics_and_keeps_confusion_matrices(tmp_path):
    module = VideoModule(config())
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    (metrics,) = trainer.test(module, loader(6, batch_size=3), verbose=False)
    assert {"test/loss", "test/leaderboard", "test/action/bal_acc"} <= set(metrics)
    assert module.test_confusion["action"].shape == (8, 8)
    assert int(module.test_confusion["offence"].sum()) == 6
    assert int(module.test_confusion["offence"][3].sum()) == 1  # only item 3 is a red card


@pytest.mark.parametrize("enabled", [False, True])
def test_model_compile_compiles_the_backbone_once(monkeypatch, tmp_path, enabled):
    calls: list[dict[str, Any]] = []

    def fake_compile(fn: Any, **kwargs: Any) -> Any:  # records the call, runs eagerly
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = VideoModule(config(model={"compile": enabled, "compile_mode": "max-autotune"}))
    fit(module, tmp_path, max_steps=2)
    assert calls == ([{"mode": "max-autotune"}] if enabled else [])
    assert (module.model.backbone._compiled_call_impl is not None) == enabled
