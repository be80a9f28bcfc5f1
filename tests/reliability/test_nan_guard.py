"""NaN/Inf guard: a non-finite loss or gradient stops the run naming step, batch and value, or
skips the step (weights and optimizer state untouched, counted, limited); a NaN metric never
makes a checkpoint "best"."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightstack.core.callbacks.nan_guard import FiniteModelCheckpoint, NaNGuard, NonFiniteError
from lightstack.core.checkpoints import AtomicCheckpointIO, load_checkpoint
from lightstack.core.trainer import build_trainer
from lightstack.physics.stages.operator import OperatorStage
from lightstack.physics.train import train
from optimizer_snapshot import Snapshot

POISON_STEP = 3


@pytest.fixture
def poisoned_loss(monkeypatch):
    """The operator stage's loss is NaN at global step 3."""
    original = OperatorStage.training_step

    def step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step == POISON_STEP else loss

    monkeypatch.setattr(OperatorStage, "training_step", step)


@pytest.fixture
def poisoned_gradient(monkeypatch):
    """At global step 3 the loss stays finite but one weight's gradient is NaN."""
    original = OperatorStage.training_step

    def step(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        if self.global_step != POISON_STEP:
            return loss
        weight = self.model.encoder.embed.weight
        return loss + (weight.sum() * 0).sqrt()  # sqrt'(0) = inf, times 0: a NaN gradient

    monkeypatch.setattr(OperatorStage, "training_step", step)


def all_finite(path: Path) -> bool:
    state = load_checkpoint(path)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_stop_names_the_step_batch_and_loss(poisoned_loss, tiny_config, tmp_path):
    cfg = tiny_config("training.nan_guard.action=stop")
    with pytest.raises(NonFiniteError) as info:
        train(cfg, tmp_path / "run")
    message = str(info.value)
    assert "train/loss is NaN/Inf at global step 3 (epoch 0, batch 3)" in message
    assert "training.nan_guard.action=stop" in message
    assert "weights were checked and are finite: the last checkpoint is usable" in message
    assert isinstance(info.value, ValueError)  # the CLI reports it as one message
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2 and all_finite(last)


def test_stop_names_a_weight_that_already_holds_nan():
    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

    model = Model()
    with torch.no_grad():
        model.layer.bias[1] = float("inf")
    with pytest.raises(NonFiniteError, match=r"weight layer\.bias already holds NaN/Inf"):
        NaNGuard("stop", 0)._act(model, "train/loss", "global step 0", on_step=True)


def test_stop_names_the_parameter_of_a_bad_gradient(poisoned_gradient, tiny_config, tmp_path):
    with pytest.raises(NonFiniteError, match=r"the gradient of model\.encoder\.embed\.weight"):
        train(tiny_config(), tmp_path / "run")


def test_skip_counts_logs_and_finishes_with_finite_weights(poisoned_loss, tiny_config, tmp_path):
    cfg = tiny_config("training.nan_guard.action=skip", "training.nan_guard.max_skips=2")
    with pytest.warns(UserWarning, match="optimizer step skipped \\(1 of at most 2\\)"):
        result = train(cfg, tmp_path / "run")
    assert result.metrics["train/nan_skipped_steps"] == 1.0
    assert all_finite(result.last_checkpoint) and all_finite(result.best_checkpoint)
    guard = load_checkpoint(result.last_checkpoint)["callbacks"]["NaNGuard"]
    assert guard == {"skipped": 1}  # resumed runs keep counting


def test_skip_beyond_the_limit_stops(poisoned_loss, tiny_config, tmp_path):
    cfg = tiny_config("training.nan_guard.action=skip", "training.nan_guard.max_skips=0")
    with pytest.raises(NonFiniteError, match=r"more than training\.nan_guard\.max_skips=0"):
        train(cfg, tmp_path / "run")


def test_guard_is_config_driven(tiny_config, tmp_path):
    def guards(*overrides: str) -> list[NaNGuard]:
        trainer = build_trainer(tiny_config(*overrides), tmp_path, "val/nrmse")
        return [cb for cb in trainer.callbacks if isinstance(cb, NaNGuard)]

    (default,) = guards()
    assert (default.action, default.max_skips) == ("stop", 10)
    (skip,) = guards("training.nan_guard.action=skip", "training.nan_guard.max_skips=3")
    assert (skip.action, skip.max_skips) == ("skip", 3)
    assert guards("training.nan_guard.enabled=false") == []


class Toy(L.LightningModule):
    """Linear regression whose loss is NaN at ``nan_batch``; logs ``val/score`` per epoch."""

    def __init__(self, nan_batch: int = -1, scores: tuple[float, ...] = (1.0,)):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.nan_batch = nan_batch
        self.scores = scores

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if batch_idx == self.nan_batch else loss

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.scores[min(self.current_epoch, len(self.scores) - 1)])

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), 2)


def toy_trainer(tmp_path: Path, callbacks: list[Callback], epochs: int = 1) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        plugins=[AtomicCheckpointIO()],
    )


def test_a_skipped_step_leaves_weights_and_optimizer_state_untouched(tmp_path):
    snapshot = Snapshot(index=2)
    trainer = toy_trainer(tmp_path, [NaNGuard("skip", 5), snapshot])
    with pytest.warns(UserWarning, match="train/loss is NaN/Inf at global step 2"):
        trainer.fit(Toy(nan_batch=2), loader())
    assert len(snapshot.before) == 8  # weight, bias; step, exp_avg, exp_avg_sq of each
    assert all(torch.equal(a, b) for a, b in zip(snapshot.before, snapshot.after, strict=True))
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_a_nan_metric_is_never_the_best_checkpoint(tmp_path):
    # Lightning's own ModelCheckpoint keeps a first NaN score as "best"...
    plain = ModelCheckpoint(tmp_path / "plain", filename="best", monitor="val/score")
    toy_trainer(tmp_path, [plain]).fit(Toy(scores=(float("nan"),)), loader(), loader())
    assert Path(plain.best_model_path).name == "best.ckpt"
    # ...this one does not, and takes the first finite score.
    finite = FiniteModelCheckpoint(tmp_path / "finite", filename="best", monitor="val/score")
    with pytest.warns(UserWarning, match="val/score=nan .* not saved as a best checkpoint"):
        toy_trainer(tmp_path, [finite], epochs=3).fit(
            Toy(scores=(float("nan"), 2.0, float("inf"))), loader(), loader()
        )
    assert float(finite.best_model_score) == 2.0
    assert load_checkpoint_epoch(finite.best_model_path) == 1


def load_checkpoint_epoch(path: str) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def test_weights_with_nan_are_not_written(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    with pytest.warns(UserWarning, match="weight 'w' holds NaN/Inf"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(2))
