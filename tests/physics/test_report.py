import csv
import json
import re

import pytest
import torch

from lightstack.physics.eval.gates import check_gates
from lightstack.physics.eval.leaderboard import Decision
from lightstack.physics.eval.plots import plot_predictions
from lightstack.physics.eval.report import write_report
from lightstack.physics.eval.rollout import RolloutSample
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_config):
    """A tiny operator with 6 test trajectories, in <tmp>/runs/op."""
    cfg = tiny_config("data.max_samples=24", "data.test_fraction=0.25", "eval.batch_size=4")
    return train(cfg, tmp_path_factory.mktemp("runs") / "op")


def test_lightning_and_plain_pytorch_paths_agree(trained, tmp_path):
    ckpt = trained.best_checkpoint
    plain = evaluate_checkpoint(ckpt, tmp_path / "torch", engine="torch", publish=False)
    lit = evaluate_checkpoint(ckpt, tmp_path / "lit", engine="lightning", publish=False)
    assert plain["metrics"]["all"]["trajectories"] == 6
    assert plain["metrics"].keys() == lit["metrics"].keys()
    for group, values in plain["metrics"].items():
        assert values.keys() == lit["metrics"][group].keys()
        for name, value in values.items():
            assert lit["metrics"][group][name] == pytest.approx(value, rel=1e-5, abs=1e-12), name
    assert json.loads((tmp_path / "lit" / "metrics.json").read_text())["engine"] == "lightning"
    assert not (tmp_path / "lit" / "report.html").exists()  # unpublished: metrics only


def test_eval_writes_report_leaderboard_and_summary(trained, tmp_path):
    ckpt = trained.best_checkpoint
    out = tmp_path / "eval"
    summary = evaluate_checkpoint(
        ckpt,
        out,
        overrides=[
            "gates={rollout_nrmse@4: {max: 100}, val/nrmse: {max: 1.0e-6}}",
            "eval.plot_samples=1",
        ],
    )
    assert summary["gates_passed"] is False and summary["failed_gates"] == ["val/nrmse"]
    assert summary["promoted"] is False and summary["champion"] is None
    written = json.loads((out / "summary.json").read_text())
    assert written["gates"][1]["name"] == "val/nrmse" and written["gates"][1]["max"] == 1e-6
    assert written["gates"][1]["value"] == pytest.approx(trained.metrics["val/nrmse"])
    assert written["report"] == str(out / "report.html")
    assert json.loads((out / "metrics.json").read_text())["metrics"]["all"]["trajectories"] == 6

    # the leaderboard sits beside the training run directory
    board = trained.run_dir.parent / "leaderboard.csv"
    assert summary["leaderboard"] == str(board)
    rows = list(csv.DictReader(board.open()))
    assert rows[-1]["checkpoint"] == str(ckpt.resolve()) and rows[-1]["gates_passed"] == "false"

    html = (out / "report.html").read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', html)
    assert images == [
        "Rollout error against horizon",
        "Truth, prediction and error of test trajectories",
        "Training curves",
    ]
    assert "http://" not in html and "https://" not in html  # self-contained
    assert "val/nrmse" in html and "FAILED" in html and "rollout_nrmse@16" in html

    # once the gates pass the run becomes champion; the same model again keeps one row
    passed = evaluate_checkpoint(ckpt, out, overrides=["gates={}", "eval.plot_samples=1"])
    assert passed["gates_passed"] and passed["promoted"]
    assert len(list(csv.DictReader(board.open()))) == 1


def test_report_escapes_names_and_draws_every_stage(tmp_path):
    results = {
        "all": {"rollout_nrmse@1": 0.1, "persistence_rollout_nrmse@1": 0.2, "trajectories": 4},
        "<b>a</b>": {"rollout_nrmse@1": 0.1, "persistence_rollout_nrmse@1": 0.2},
        "c": {"rollout_nrmse@1": 0.1},
    }
    sample = RolloutSample("c", torch.rand(3, 8, 1), torch.rand(3, 8, 1), torch.rand(8, 1))
    png = plot_predictions([sample], tmp_path / "predictions.png")
    field_2d = RolloutSample(
        "ns", torch.rand(5, 8, 6, 2), torch.rand(5, 8, 6, 2), torch.rand(8, 6, 2)
    )
    assert plot_predictions([field_2d], tmp_path / "2d.png").stat().st_size > 1000
    histories = {
        "operator": [{"epoch": 0, "train/loss": 1.0, "val/nrmse": 0.5}],
        "diff_residual": [{"epoch": 0, "train/loss_epoch": 0.5, "train/loss_step": 9.0}],
    }
    path = write_report(
        tmp_path / "r.html",
        title="t",
        info={"checkpoint": "x.ckpt"},
        results=results,
        predictions_png=png,
        histories=histories,
        gates=check_gates({}, {}),
        decision=Decision(True, None, ["no champion for this task set yet"]),
    )
    html = path.read_text()
    assert "&lt;b&gt;a&lt;/b&gt;" in html and "<b>a</b>" not in html
    assert html.count("data:image/png;base64,") == 3
    assert "no gates configured" in html and "promoted to champion" in html
    assert "<td>4</td>" in html  # trajectories as an integer
