"""``lightstack quickstart`` end to end on a tiny set, run twice on one relative folder."""

import json

from typer.testing import CliRunner

from lightstack.cli import app

TINY = ["generate.samples=24", "trainer.max_epochs=1", "logging.progress_bar=none"]


def quickstart(run_dir: str):
    return CliRunner().invoke(app, ["quickstart", "--run-dir", run_dir, *TINY])


def test_quickstart_prints_and_writes_its_numbers_and_resumes_on_a_second_run(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    first = quickstart("runs/qs")
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "runs/qs/summary.json").read_text())
    assert summary["run_dir"] == str((tmp_path / "runs/qs").resolve())
    assert summary["resumed"] is False and summary["optimizer_steps"] > 0
    metrics = json.loads((tmp_path / "runs/qs/eval/metrics.json").read_text())["metrics"]["all"]
    assert summary["test_onestep_nrmse"] == metrics["onestep_nrmse"]
    text = " ".join(first.output.split())
    assert f"{summary['test_onestep_nrmse']:.4f}" in text
    assert f"trained {summary['optimizer_steps']} optimizer steps in" in text
    assert "far below the 11.3x that README.md documents" in text  # one epoch: far from it
    assert "generate.samples=24" in text  # named as the cause

    second = quickstart("runs/qs")
    assert second.exit_code == 0, second.output
    again = json.loads((tmp_path / "runs/qs/summary.json").read_text())
    assert again["resumed"] is True
    assert again["optimizer_steps"] == summary["optimizer_steps"]  # nothing left to train
    assert again["test_onestep_nrmse"] == summary["test_onestep_nrmse"]
    assert "in total with the earlier run(s)" in " ".join(second.output.split())
