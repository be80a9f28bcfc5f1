import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import typer
import yaml
from filelock import FileLock
from typer.testing import CliRunner

from lightstack.core.config import save_config
from lightstack.core.run import RunDirInUse
from lightstack.core.trainer import FitResult
from lightstack.physics import pipeline
from lightstack.physics.cli import physics_app
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.pipeline import (
    EXIT_GATE_FAILED,
    EXIT_OK,
    EXIT_STAGE_FAILED,
    PipelineError,
    run_pipeline,
)
from lightstack.physics.pipeline_config import default_run_dir
from lightstack.physics.train import train

torch.set_num_threads(1)
TWO_STAGES = "pipeline.stages=[operator, diff_residual]"


@pytest.fixture(scope="module")
def operator_ckpt(tmp_path_factory, tiny_config) -> Path:
    """One real operator checkpoint; the fake stages below hand it on unchanged."""
    run = train(tiny_config("data.max_samples=16"), tmp_path_factory.mktemp("op") / "run")
    return run.best_checkpoint


class FakeStages:
    """Stand-in for ``train``: records each call and copies the incoming checkpoint through.

    ``fail`` maps a stage to the exception it raises (after leaving a partial file behind).
    """

    source: Path  # what a stage without init_from "trains": the real operator checkpoint

    def __init__(self, fail: dict[str, BaseException] | None = None):
        self.calls: list[tuple[str, str | None]] = []
        self.resumes: list[str] = []
        self.env: list[dict[str, str | None]] = []
        self.fail = fail or {}

    def __call__(self, cfg, run_dir, resume="auto") -> FitResult:
        run_dir = Path(run_dir)
        self.calls.append((cfg.stage, cfg.init_from))
        self.resumes.append(resume)
        self.env.append({k: os.environ.get(k) for k in ("WANDB_RUN_ID", "WANDB_RESUME")})
        ckpt = run_dir / "checkpoints" / "best.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        if cfg.stage in self.fail:
            (run_dir / "partial.txt").write_text("half done")
            raise self.fail[cfg.stage]
        shutil.copy(cfg.init_from or self.source, ckpt)
        (run_dir / "history.json").write_text(json.dumps([{"epoch": 0, "train/loss": 0.5}]))
        return FitResult(run_dir, cfg, ckpt, ckpt, {"train/loss": 0.5, "val/nrmse": 0.25}, True)


def config(tiny_config, operator_ckpt, *overrides):
    FakeStages.source = operator_ckpt
    return tiny_config("data.max_samples=16", TWO_STAGES, *overrides)


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_resume_after_a_failed_stage_does_not_retrain_finished_ones(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    cfg = config(tiny_config, operator_ckpt)
    run_dir = tmp_path / "runs" / "p"
    first = FakeStages(fail={"diff_residual": RuntimeError("diverged")})
    monkeypatch.setattr(pipeline, "train", first)
    result = run_pipeline(cfg, run_dir)
    assert result.exit_code == EXIT_STAGE_FAILED
    assert result.message.startswith("stage diff_residual failed: RuntimeError: diverged")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stage_failed" and summary["failed_stage"] == "diff_residual"
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    assert list(state["stages"]) == ["operator"]
    assert state["failed"]["stage"] == "diff_residual"
    assert "RuntimeError: diverged" in (run_dir / "stages/diff_residual/error.txt").read_text()
    op_ckpt = run_dir / state["stages"]["operator"]["checkpoint"]
    stamp = mtime(op_ckpt)

    second = FakeStages()
    monkeypatch.setattr(pipeline, "train", second)
    result = run_pipeline(cfg, run_dir)
    assert result.exit_code == EXIT_OK, result.message
    assert second.calls == [("diff_residual", str(op_ckpt))]  # handed the operator's checkpoint
    assert mtime(op_ckpt) == stamp
    assert not (run_dir / "stages/diff_residual/partial.txt").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "passed" and summary["stages"]["operator"]["resumed"] is True
    assert summary["stages"]["diff_residual"]["resumed"] is False
    assert "failed" not in json.loads((run_dir / "pipeline_state.json").read_text())
    assert (run_dir / "eval" / "report.html").is_file()
    assert summary["eval"]["promoted"] is True  # first model of its task set

    third = FakeStages()
    monkeypatch.setattr(pipeline, "train", third)
    assert run_pipeline(cfg, run_dir).exit_code == EXIT_OK
    assert third.calls == []


def test_a_stage_killed_before_its_first_checkpoint_is_retrained_from_scratch(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    cfg = config(tiny_config, operator_ckpt)
    run_dir = tmp_path / "p"
    monkeypatch.setattr(pipeline, "train", FakeStages(fail={"diff_residual": KeyboardInterrupt()}))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg, run_dir)
    assert (run_dir / "stages/diff_residual/partial.txt").is_file()
    stamp = mtime(run_dir / "stages/operator/checkpoints/best.ckpt")

    again = FakeStages()
    monkeypatch.setattr(pipeline, "train", again)
    assert run_pipeline(cfg, run_dir).exit_code == EXIT_OK
    assert [stage for stage, _ in again.calls] == ["diff_residual"]
    assert again.resumes == ["never"]
    assert not (run_dir / "stages/diff_residual/partial.txt").exists()
    assert mtime(run_dir / "stages/operator/checkpoints/best.ckpt") == stamp


def test_a_killed_stage_resumes_from_its_last_checkpoint(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    cfg = config(tiny_config, operator_ckpt)
    run_dir = tmp_path / "p"
    monkeypatch.setattr(pipeline, "train", FakeStages(fail={"diff_residual": SystemExit(143)}))
    with pytest.raises(SystemExit):
        run_pipeline(cfg, run_dir)
    last = run_dir / "stages/diff_residual/checkpoints/last.ckpt"
    shutil.copy(operator_ckpt, last)  # what the stage saved when it was stopped

    again = FakeStages()
    monkeypatch.setattr(pipeline, "train", again)
    assert run_pipeline(cfg, run_dir).exit_code == EXIT_OK
    assert [stage for stage, _ in again.calls] == ["diff_residual"]
    assert again.resumes == ["auto"]
    assert (run_dir / "stages/diff_residual/partial.txt").is_file()  # the folder was kept

    reseeded = "pipeline.stage_overrides={diff_residual: {seed: 9}}"
    changed = config(tiny_config, operator_ckpt, reseeded)
    state = json.loads((run_dir / "pipeline_state.json").read_text())
    del state["stages"]["diff_residual"]  # as if it had been stopped again
    (run_dir / "pipeline_state.json").write_text(json.dumps(state))
    other = FakeStages()
    monkeypatch.setattr(pipeline, "train", other)
    assert run_pipeline(changed, run_dir).exit_code == EXIT_OK
    assert other.resumes == ["never"]  # started with another config: trained from scratch
    assert not (run_dir / "stages/diff_residual/partial.txt").exists()


def test_independent_stage_gets_its_own_data_and_is_not_retrained_with_the_chain(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    """steady_prior starts from no checkpoint and here trains on Darcy data it generates."""
    cfg = config(
        tiny_config,
        operator_ckpt,
        "pipeline.stages=[operator, diff_residual, steady_prior]",
        "pipeline.stage_overrides={steady_prior: {data: {train_files: []}, "
        "generate: {equation: darcy2d, samples: 2, params: {nx: 16}}}}",
    )
    first = FakeStages()
    seen = {}

    def record(stage_cfg, run_dir, resume="auto"):
        seen[stage_cfg.stage] = list(stage_cfg.data.train_files)
        return first(stage_cfg, run_dir, resume)

    monkeypatch.setattr(pipeline, "train", record)
    result = run_pipeline(cfg, tmp_path / "p")
    assert result.exit_code == EXIT_OK, result.message
    op_ckpt = str(tmp_path / "p/stages/operator/checkpoints/best.ckpt")
    assert first.calls == [("operator", None), ("diff_residual", op_ckpt), ("steady_prior", None)]
    darcy = Path(seen["steady_prior"][0])
    assert darcy.parent.parent == tmp_path / "p" / "data" and darcy.name == "darcy2d.hdf5"
    assert darcy.is_file() and seen["operator"] == seen["diff_residual"] != seen["steady_prior"]
    # the last stage with rollouts is the one evaluated
    assert "stages/diff_residual/" in result.summary["eval"]["checkpoint"]

    (tmp_path / "p/stages/operator/checkpoints/best.ckpt").unlink()
    again = FakeStages()
    monkeypatch.setattr(pipeline, "train", again)
    assert run_pipeline(cfg, tmp_path / "p").exit_code == EXIT_OK
    assert [stage for stage, _ in again.calls] == ["operator", "diff_residual"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pipeline.stages=[diff_residual]"], "starts from a operator checkpoint"),
        (["pipeline.stages=[diff_residual, operator]"], "list operator before it"),
        (["pipeline.stages=[steady_prior]"], "nothing to evaluate"),
        (
            ["pipeline.stages=[operator, steady_prior]", "pipeline.eval_stage=steady_prior"],
            "has no rollout",
        ),
    ],
)
def test_stage_order_is_checked_before_training(
    tiny_config, operator_ckpt, tmp_path, monkeypatch, overrides, message
):
    fake = FakeStages()
    monkeypatch.setattr(pipeline, "train", fake)
    with pytest.raises(PipelineError, match=message):
        run_pipeline(config(tiny_config, operator_ckpt, *overrides), tmp_path / "p")
    assert fake.calls == []


def test_a_stage_outside_the_pipeline_starts_from_init_from(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    fake = FakeStages()
    monkeypatch.setattr(pipeline, "train", fake)
    cfg = config(
        tiny_config, operator_ckpt, "pipeline.stages=[diff_residual]", f"init_from={operator_ckpt}"
    )
    assert run_pipeline(cfg, tmp_path / "p").exit_code == EXIT_OK
    assert fake.calls == [("diff_residual", str(operator_ckpt))]


def test_changed_training_config_is_refused_gates_are_not(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    monkeypatch.setattr(pipeline, "train", FakeStages())
    run_pipeline(config(tiny_config, operator_ckpt), tmp_path / "p")
    with pytest.raises(PipelineError, match=r"stage operator .* different configuration"):
        run_pipeline(config(tiny_config, operator_ckpt, "optimizer.lr=0.1"), tmp_path / "p")
    relaxed = config(tiny_config, operator_ckpt, "gates={rollout_nrmse: {max: 100}}")
    assert run_pipeline(relaxed, tmp_path / "p").exit_code == EXIT_OK


def test_stage_overrides_apply_to_their_stage_only(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    seen = {}
    fake = FakeStages()

    def record(cfg, run_dir, resume="auto"):
        seen[cfg.stage] = cfg.trainer.max_epochs
        return fake(cfg, run_dir, resume)

    monkeypatch.setattr(pipeline, "train", record)
    cfg = config(
        tiny_config,
        operator_ckpt,
        "pipeline.stage_overrides={diff_residual: {trainer: {max_epochs: 7}}}",
    )
    run_pipeline(cfg, tmp_path / "p")
    assert seen == {"operator": 1, "diff_residual": 7}


def test_ddp_processes_of_higher_rank_train_but_write_nothing(
    tiny_config, operator_ckpt, tmp_path, monkeypatch
):
    cfg = config(tiny_config, operator_ckpt)
    monkeypatch.setattr(pipeline, "train", FakeStages(fail={"diff_residual": RuntimeError("x")}))
    run_pipeline(cfg, tmp_path / "p")
    state_before = (tmp_path / "p" / "pipeline_state.json").read_text()
    summary_before = (tmp_path / "p" / "summary.json").read_text()
    sentinel = tmp_path / "p" / "stages" / "diff_residual" / "rank0-is-writing.txt"
    sentinel.write_text("")

    monkeypatch.setattr(pipeline.rank_zero_only, "rank", 1)
    fake = FakeStages()
    monkeypatch.setattr(pipeline, "train", fake)
    with FileLock(str(tmp_path / "p" / ".run.lock")):  # rank 0 holds the lock
        result = run_pipeline(cfg, tmp_path / "p")
    assert result.exit_code == EXIT_OK and result.message == "rank 1: stages done"
    assert [stage for stage, _ in fake.calls] == ["diff_residual"]
    assert sentinel.is_file()  # rank 0's stage folder was not wiped
    assert (tmp_path / "p" / "pipeline_state.json").read_text() == state_before
    assert (tmp_path / "p" / "summary.json").read_text() == summary_before
    assert not (tmp_path / "p" / "eval").exists()


def test_a_second_pipeline_on_the_same_run_dir_is_refused(tiny_config, operator_ckpt, tmp_path):
    (tmp_path / "p").mkdir()
    with (
        FileLock(str(tmp_path / "p" / ".run.lock")),
        pytest.raises(RunDirInUse, match=r"run directory .*p is in use by another process"),
    ):
        run_pipeline(config(tiny_config, operator_ckpt), tmp_path / "p")


def test_every_stage_logs_into_one_wandb_run(tiny_config, operator_ckpt, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cfg = config(tiny_config, operator_ckpt, "logging.loggers=[wandb]")
    failing = FakeStages(fail={"diff_residual": RuntimeError("x")})
    monkeypatch.setattr(pipeline, "train", failing)
    run_pipeline(cfg, tmp_path / "p")
    context = json.loads((tmp_path / "p" / "wandb_context.json").read_text())
    assert context["WANDB_RESUME"] == "allow" and context["WANDB_MODE"] == "offline"
    resumed = FakeStages()
    monkeypatch.setattr(pipeline, "train", resumed)
    run_pipeline(cfg, tmp_path / "p")
    run_ids = {env["WANDB_RUN_ID"] for env in failing.env + resumed.env}
    assert run_ids == {context["WANDB_RUN_ID"]}
    assert "WANDB_RUN_ID" not in os.environ  # restored after each stage


def test_default_run_dir_follows_the_training_config(tiny_config, operator_ckpt):
    base = default_run_dir(config(tiny_config, operator_ckpt))
    assert base.parent == Path("runs") and re.fullmatch(r"tiny-[0-9a-f]{8}", base.name)
    assert default_run_dir(config(tiny_config, operator_ckpt, "gates={x: {max: 1}}")) == base
    assert default_run_dir(config(tiny_config, operator_ckpt, "optimizer.lr=0.1")) != base


# --- the real stages ----------------------------------------------------------------------------
def test_real_stages_hand_off_checkpoints_and_any_stage_evaluates(tiny_config, tmp_path):
    cfg = tiny_config(
        "data.max_samples=16",
        "pipeline.stages=[operator, diff_residual, consistency_distill]",
        "diffusion={width: 32, depth: 1, heads: 2}",
    )
    result = run_pipeline(cfg, tmp_path / "p")
    assert result.exit_code == EXIT_OK, result.message
    stages = tmp_path / "p" / "stages"
    for stage, parent in (("diff_residual", "operator"), ("consistency_distill", "diff_residual")):
        written = yaml.safe_load((stages / stage / "config.yaml").read_text())
        assert written["init_from"] == str(stages / parent / "checkpoints" / "best.ckpt")
    assert result.summary["eval"]["checkpoint"] == str(
        stages / "consistency_distill" / "checkpoints" / "best.ckpt"
    )
    history = {s: (stages / s / "history.json").is_file() for s in cfg.pipeline.stages}
    assert all(history.values()), history

    # Lightning and the plain loop agree on a sampling stage too (seeded residual draws)
    # (the last stage through `physics eval` itself, as a user evaluates it)
    for stage in ("diff_residual", "consistency_distill"):
        ckpt = stages / stage / "checkpoints" / "best.ckpt"
        if stage == "consistency_distill":
            args = ["eval", "--ckpt", str(ckpt), "--run-dir", str(tmp_path / "t"), "gates={}"]
            assert CliRunner().invoke(cli(), args).exit_code == 0
            plain = json.loads((tmp_path / "t" / "metrics.json").read_text())["metrics"]
            assert (tmp_path / "t" / "predictions.hdf5").is_file()
        else:
            plain = evaluate_checkpoint(ckpt, tmp_path / "t", publish=False)["metrics"]
        lit = evaluate_checkpoint(ckpt, tmp_path / "l", engine="lightning", publish=False)
        for name, value in plain["all"].items():
            assert lit["metrics"]["all"][name] == pytest.approx(value, rel=1e-5, abs=1e-12)
        written = json.loads((tmp_path / "t" / "metrics.json").read_text())["correctors"]
        expected = {"operator", "teacher_4"} | (
            {"student_1", "student_2"} if stage == "consistency_distill" else set()
        )
        assert set(written) == expected
        for row in written.values():
            assert row["rollout_nrmse"] > 0 and row["ms_per_step"] > 0


# --- the command line, end to end on the real operator stage ----------------------------------
def cli() -> typer.Typer:
    return physics_app


def test_cli_gate_and_stage_failures_set_the_exit_code(tiny_config, tmp_path):
    path = tmp_path / "pipeline.yaml"
    save_config(tiny_config("data.max_samples=16", "pipeline.stages=[operator]"), path)
    runner = CliRunner()
    args = ["pipeline", "--config", str(path), "--run-dir"]

    failed = runner.invoke(
        cli(), [*args, str(tmp_path / "a"), "gates={rollout_nrmse@4: {max: 1.0e-9}}"]
    )
    assert failed.exit_code == EXIT_GATE_FAILED, failed.output
    assert "gate rollout_nrmse@4: FAILED" in failed.output
    assert "quick evaluation" in failed.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "gates_failed"
    assert summary["small_eval"]["gates"][0]["max"] == 1e-9
    assert not (tmp_path / "a" / "eval").exists()  # the full evaluation never ran

    passed = runner.invoke(cli(), [*args, str(tmp_path / "a")])  # resumes: evaluates only
    assert passed.exit_code == EXIT_OK, passed.output
    assert "stage operator: finished earlier" in passed.output

    broken = runner.invoke(cli(), [*args, str(tmp_path / "b"), "loss.rollout_horizon=500"])
    assert broken.exit_code == EXIT_STAGE_FAILED, broken.output
    assert "stage operator failed" in broken.output

    ckpt = tmp_path / "a" / "stages" / "operator" / "checkpoints" / "best.ckpt"
    evaluated = runner.invoke(
        cli(),
        [
            "eval",
            "--ckpt",
            str(ckpt),
            "--run-dir",
            str(tmp_path / "e"),
            "--engine",
            "lightning",
            "gates={val/nrmse: {max: 1.0e-9}}",
            "gates.rollout_nrmse@4=null",  # the checkpoint remembers the gate it was run with
        ],
    )
    assert evaluated.exit_code == EXIT_GATE_FAILED, evaluated.output
    assert "gate val/nrmse: FAILED" in evaluated.output
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["failed_gates"] == [
        "val/nrmse"
    ]


def test_a_stage_generating_another_equation_inherits_no_solver_parameters(tiny_config):
    from lightstack.physics.pipeline_config import stage_config

    cfg = tiny_config(
        "generate={equation: burgers1d, samples: 8, params: {nu: 0.01, nx: 64}}",
        "pipeline.stage_overrides="
        "{steady_prior: {generate: {equation: darcy2d, params: {nx: 16}}}}",
    )
    steady = stage_config(cfg, "steady_prior")
    assert steady.generate.equation == "darcy2d" and steady.generate.params == {"nx": 16}
    assert stage_config(cfg, "operator").generate.params == {"nu": 0.01, "nx": 64}


@pytest.mark.parametrize(
    ("operator_nrmse", "exit_code"), [(0.01, EXIT_OK), (0.5, EXIT_GATE_FAILED)]
)
def test_gates_judge_the_evaluated_stage_not_a_later_steady_prior(
    tiny_config, operator_ckpt, tmp_path, monkeypatch, operator_nrmse, exit_code
):
    """A steady_prior trained after the operator logs val/nrmse too; the gate on the
    operator's rollout must read the operator's value, whatever the steady model scored."""
    fake = FakeStages()

    def train_with_own_metrics(cfg, run_dir, resume="auto"):
        result = fake(cfg, run_dir, resume)
        value = operator_nrmse if cfg.stage == "operator" else 0.5 - operator_nrmse + 0.01
        return dataclasses.replace(result, metrics={"val/nrmse": value})

    monkeypatch.setattr(pipeline, "train", train_with_own_metrics)
    cfg = config(
        tiny_config,
        operator_ckpt,
        "pipeline.stages=[operator, steady_prior]",
        "gates={val/nrmse: {max: 0.1}}",
    )
    result = run_pipeline(cfg, tmp_path / "p")
    assert result.exit_code == exit_code, result.message
    gate = result.summary["small_eval"]["gates"][0]
    assert gate["name"] == "val/nrmse" and gate["value"] == pytest.approx(operator_nrmse)
    assert [s for s, _ in fake.calls] == ["operator", "steady_prior"]


def test_lineage_follows_the_checkpoint_hand_off(tiny_config, operator_ckpt, tmp_path):
    stages = "pipeline.stages=[operator, diff_residual, consistency_distill, steady_prior]"
    run = pipeline._Run(config(tiny_config, operator_ckpt, stages), tmp_path, print)
    assert run.lineage("consistency_distill") == [
        "operator",
        "diff_residual",
        "consistency_distill",
    ]
    assert run.lineage("steady_prior") == ["steady_prior"]
