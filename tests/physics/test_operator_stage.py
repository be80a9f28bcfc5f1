import json

import pytest
import torch

from lightstack.core.checkpoints import CheckpointError, load_checkpoint
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.stages.predictors import load_surrogate
from lightstack.physics.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """One short training run shared by the checks below."""
    return train(tiny_config("trainer.max_epochs=2"), tmp_path_factory.mktemp("op") / "run")


def test_run_directory_holds_config_checkpoints_history(trained):
    run = trained.run_dir
    assert (run / "config.yaml").is_file()
    assert trained.best_checkpoint is not None and trained.best_checkpoint.is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    history = json.loads((run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]
    assert {
        "val/nrmse",
        "val/rollout_nrmse",
        "val/burgers/nrmse",
        "train/L_recon",
        "train/L_onestep",
        "train/L_latent",
    } <= set(history[-1])
    assert all(row["val/nrmse"] > 0 for row in history)


def test_task_names_may_hold_dots(tiny_config, tmp_path):
    """PDEBench file stems such as ``1D_Burgers_Sols_Nu0.01`` name tasks and their metrics."""
    cfg = tiny_config(
        "data.task_names=['1D_Burgers_Sols_Nu0.01']",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    )
    result = train(cfg, tmp_path / "run")
    assert "val/1D_Burgers_Sols_Nu0.01/nrmse" in result.metrics


def test_checkpoint_is_self_describing(trained):
    ckpt = load_checkpoint(trained.best_checkpoint)
    meta = ckpt["lightstack"]
    assert meta["family"] == "physics" and meta["stage"] == "operator"
    assert meta["config"]["model"]["spatial_shape"] == [64]
    assert meta["config"]["model"]["channels"] == 1
    assert meta["tasks"] == ["burgers"]


def test_plain_module_matches_lightning_predictions(trained):
    from lightstack.physics.stages.operator import OperatorStage

    model, cfg, tasks = load_surrogate(trained.best_checkpoint)
    lightning_module = OperatorStage(cfg, tasks)
    ckpt = torch.load(trained.best_checkpoint, weights_only=True)
    lightning_module.load_state_dict(ckpt["state_dict"])
    lightning_module.eval()
    torch.manual_seed(0)
    u = torch.randn(2, 64, 1)
    grid = (torch.arange(64) / 64).view(1, 64, 1).expand(2, 64, 1)
    dt, params = torch.full((2,), 0.1), torch.zeros(2, 0)
    with torch.no_grad():
        expected = lightning_module.model(u, grid, dt, params)
        assert torch.equal(model(u, grid, dt, params), expected)
        assert not torch.equal(expected, u)


def test_eval_writes_metrics_and_plot(trained, tmp_path):
    summary = evaluate_checkpoint(trained.best_checkpoint, tmp_path / "eval")
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (
        written["metrics"]["all"]["trajectories"] == summary["metrics"]["all"]["trajectories"] > 0
    )
    overall = written["metrics"]["all"]
    for key in (
        "onestep_nrmse",
        "rollout_nrmse@1",
        "rollout_nrmse@4",
        "rollout_nrmse@16",
        "rollout_nrmse",
        "rmse",
        "max_error",
        "mass_drift",
        "correlation_time@0.9",
    ):
        assert key in overall and overall[key] >= 0
    assert "burgers" in written["metrics"]
    assert (tmp_path / "eval" / "predictions.png").stat().st_size > 1000


def test_eval_refuses_other_files(tmp_path):
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(CheckpointError, match="not a lightstack checkpoint"):
        load_surrogate(bogus)
    bogus.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="could not be loaded"):
        load_surrogate(bogus)


def test_eval_refuses_mismatched_architecture(trained, tmp_path):
    ckpt = torch.load(trained.best_checkpoint, weights_only=True)
    ckpt["lightstack"]["config"]["model"]["operator_depth"] = 3
    path = tmp_path / "edited.ckpt"
    torch.save(ckpt, path)
    with pytest.raises((CheckpointError, RuntimeError)):
        load_surrogate(path)


def test_skip_lightning_val_checkpoints_on_train_loss(tiny_config, tmp_path):
    cfg = tiny_config("training.skip_lightning_val=true", "data.max_samples=16")
    result = train(cfg, tmp_path / "run")
    ckpt = load_checkpoint(result.best_checkpoint)
    callback_state = next(v for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k)
    assert callback_state["monitor"] == "train/loss"
    assert "val/nrmse" not in result.metrics
