"""``data.initial_step``: histories of input snapshots for the operator, the FNO and evaluation."""

from __future__ import annotations

import pytest
import torch

from lightstack.core.config import ConfigError
from lightstack.physics.data.pdebench import PDEBenchError
from lightstack.physics.eval.rollout import evaluate_batch, predict_trajectory
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.models.history import history_windows, stack_history, teacher_forced
from lightstack.physics.stages import build_datamodule, build_stage
from lightstack.physics.stages.predictors import load_surrogate
from lightstack.physics.train import train, with_data_shapes

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def test_history_is_pdebench_layout_time_major_oldest_first():
    fields = torch.arange(2 * 5 * 3 * 2, dtype=torch.float32).view(2, 5, 3, 2)  # (B, T, X, C)
    windows = history_windows(fields, 3)
    assert windows.shape == (2, 3, 3, 6)
    # window 1 holds snapshots 1, 2, 3; channel k * C + c is channel c of the k-th of them
    for k in range(3):
        torch.testing.assert_close(windows[:, 1, :, 2 * k : 2 * k + 2], fields[:, 1 + k])
    # PDEBench's FNO input: xx (B, X, t_init, C).reshape(B, X, t_init * C)
    pdebench = fields[:, :3].permute(0, 2, 1, 3).reshape(2, 3, 6)
    torch.testing.assert_close(stack_history(fields[:, :3]), pdebench)
    inputs, targets = teacher_forced(fields, 3)
    assert inputs.shape == (2, 2, 3, 6) and torch.equal(targets, fields[:, 3:])
    assert torch.equal(stack_history(fields[:, :1]), fields[:, 0])
    with pytest.raises(ValueError, match="cannot fill a history of initial_step=6"):
        history_windows(fields, 6)


def test_training_windows_hold_the_history(tiny_config):
    dm = build_datamodule(tiny_config("data.initial_step=3", "loss.rollout_horizon=2"))
    windows = dm.windows("train", 2)
    assert windows[0]["fields"].shape[0] == 5  # 3 inputs + 2 predicted
    starts = len(windows.datasets[0]) // len(dm.splits[0].train)
    assert starts == 21 - 5 + 1  # 21 snapshots after reduction_t=10
    with pytest.raises(PDEBenchError, match=r"data.initial_step=20 inputs and 2 to predict"):
        build_datamodule(tiny_config("data.initial_step=20")).windows("train", 2)


@pytest.mark.parametrize("stage", ["diff_residual", "consistency_distill", "steady_prior"])
def test_single_snapshot_stages_refuse_a_history(tiny_config, stage):
    with pytest.raises(ConfigError, match=rf"stage '{stage}' takes one input snapshot"):
        tiny_config(f"stage={stage}", "data.initial_step=2")


@pytest.mark.slow
def test_one_snapshot_evaluates_exactly_as_before(tiny_config):
    """With initial_step=1 the predictions are those of the single-snapshot formulas, bit for
    bit."""
    torch.manual_seed(0)
    cfg = tiny_config()
    dm = build_datamodule(cfg)
    stage = build_stage(with_data_shapes(cfg, dm), dm).eval()
    model = stage.model
    batch = next(iter(dm.val_dataloader()))
    fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
    t = fields.shape[1]
    with torch.no_grad():
        prediction = predict_trajectory(model, batch)
        z = model.encode(fields[:, 0], grid)
        frames = []
        for _ in range(t - 1):
            z = model.step(z, dt, params)
            frames.append(model.decode_grid(z, grid))
        onestep = model(
            fields[:, :-1].flatten(0, 1),
            grid.repeat_interleave(t - 1, dim=0),
            dt.repeat_interleave(t - 1),
            params.repeat_interleave(t - 1, dim=0),
        ).view_as(fields[:, 1:])
        result = evaluate_batch(model, batch, [0.9])
        stage_values = stage.evaluate_batch(batch)
    assert torch.equal(prediction[:, 0], fields[:, 0])
    assert torch.equal(prediction[:, 1:], torch.stack(frames, dim=1))
    per_step = (onestep - fields[:, 1:]).flatten(2).norm(dim=-1) / fields[:, 1:].flatten(2).norm(
        dim=-1
    )
    onestep_nrmse = result.errors["onestep"]["nrmse"][:, 0]  # (B, T - 1), one channel
    torch.testing.assert_close(onestep_nrmse.float(), per_step, rtol=0, atol=1e-6)
    torch.testing.assert_close(stage_values["nrmse"], per_step.mean(dim=1), rtol=0, atol=1e-6)


def test_operator_with_history_trains_and_evaluates(tiny_config, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("data.initial_step=2", *SHORT)
    result = train(cfg, tmp_path / "run", resume="never")
    assert torch.isfinite(torch.tensor(result.metrics["val/rollout_nrmse"]))
    model, stored, _ = load_surrogate(result.last_checkpoint)
    assert stored.model.initial_step == 2 == model.initial_step
    assert model.encoder.embed.in_features == 2 * 4  # two snapshots of one channel, patch 4
    summary = evaluate_checkpoint(result.last_checkpoint, tmp_path / "eval", publish=False)
    metrics = summary["metrics"]["all"]
    # 21 snapshots, 2 of them inputs: the rollout covers 19 steps, horizon 16 among them
    assert torch.isfinite(torch.tensor(metrics["rollout_nrmse@16"]))
    # the two given snapshots open the prediction; persistence repeats the last of them
    dm = build_datamodule(stored)
    batch = next(iter(dm.test_dataloader()))
    with torch.no_grad():
        result = evaluate_batch(model, batch, [0.9])
    fields = batch["fields"]
    assert result.prediction.shape == fields.shape
    assert torch.equal(result.prediction[:, :2], fields[:, :2])
    assert result.errors["rollout"]["nrmse"].shape[-1] == fields.shape[1] - 2
    persistence = (fields[:, 1] - fields[:, 2]).flatten(1).norm(dim=1) / fields[:, 2].flatten(
        1
    ).norm(dim=1)
    first = result.errors["persistence"]["nrmse"][:, 0, 0].float()
    torch.testing.assert_close(first, persistence)


@pytest.mark.slow
def test_fno_with_history_slides_its_window(tiny_config, tmp_path):
    pytest.importorskip("neuralop")
    torch.manual_seed(0)
    fno = ("stage=fno", "fno.modes=8", "fno.width=8", "fno.layers=2", "data.initial_step=2")
    cfg = tiny_config(*fno, *SHORT)
    dm = build_datamodule(cfg)
    model = build_stage(with_data_shapes(cfg, dm), dm).model.eval()
    assert model.fno.in_channels == 2 * 1 + 1  # two snapshots of one channel, one coordinate
    batch = next(iter(dm.val_dataloader()))
    fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
    with torch.no_grad():
        roll = model.rollout(stack_history(fields[:, :2]), grid, dt, params, 2)
        first = model(stack_history(fields[:, :2]), grid, dt, params)
        second = model(torch.cat([fields[:, 1], first], dim=-1), grid, dt, params)
    torch.testing.assert_close(roll[:, 0], first)
    torch.testing.assert_close(roll[:, 1], second, rtol=1e-4, atol=1e-5)
    result = train(cfg, tmp_path / "run", resume="never")
    assert torch.isfinite(torch.tensor(result.metrics["val/rollout_nrmse"]))


def test_increment_prediction_starts_at_persistence(tiny_config):
    """An untrained operator is the identity in latent space, so with model.predict_increment
    every predicted step is the last input snapshot: the reconstruction error cancels."""
    torch.manual_seed(0)
    cfg = tiny_config("model.predict_increment=true", "data.initial_step=2")
    dm = build_datamodule(cfg)
    model = build_stage(with_data_shapes(cfg, dm), dm).model.eval()
    batch = next(iter(dm.val_dataloader()))
    fields, grid, dt, params = batch["fields"], batch["grid"], batch["dt"], batch["params"]
    with torch.no_grad():
        roll = model.rollout(stack_history(fields[:, :2]), grid, dt, params, 3)
        one = model(stack_history(fields[:, :2]), grid, dt, params)
        plain = model.decode_grid(model.encode(stack_history(fields[:, :2]), grid), grid)
    persistence = fields[:, 1:2].expand_as(roll)
    torch.testing.assert_close(roll, persistence, rtol=0, atol=1e-5)
    torch.testing.assert_close(one, fields[:, 1], rtol=0, atol=1e-5)
    assert (plain - fields[:, 1]).abs().max() > 1e-2  # without the anchor: the decoder's error
    with pytest.raises(ConfigError, match=r"model\.predict_increment is an operator-stage option"):
        tiny_config("stage=fno", "model.predict_increment=true")
