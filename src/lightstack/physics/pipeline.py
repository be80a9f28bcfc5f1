"""``physics pipeline``: train the configured stages in order, then evaluate and judge the model.

Each stage trains in ``run_dir/stages/<stage>/``; a stage that builds on another
(``stages.REQUIRES``: diff_residual on operator, consistency_distill on diff_residual) starts
from that stage's checkpoint (``init_from``). ``pipeline_state.json``, rewritten atomically,
records every finished stage (its checkpoint, a fingerprint of its config and its metrics) and
the fingerprint of the stage that started training. Re-running the same command resumes at the
first stage without a finished entry: from that stage's own ``last.ckpt`` when it was started
with the same config (as ``physics train`` resumes, bit for bit), otherwise its folder is wiped
and it trains from the start, and so does every stage built on it. A finished stage whose config
has since changed is an error rather than a silent mix of two configurations (stage configs and
fingerprints: ``pipeline_config``; the state files: ``pipeline_state``). The run directory
is locked while the pipeline runs (``core.run.claim_run_dir``). After the
stages, a quick evaluation on a few test trajectories checks the gates, so a bad model fails
fast; then the full evaluation applies them again, updates the leaderboard and writes the
report.

Exit codes: 0 passed, 2 a stage failed, 3 a gate failed (1 is left to invalid input).
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from lightstack.core.io import atomic_write_json, atomic_write_text
from lightstack.core.run import claim_run_dir, last_checkpoint, write_run_config
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.eval.gates import judge
from lightstack.physics.eval.publish import RunContext, judged_metrics
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.pipeline_config import (
    PipelineError,
    check_order,
    fingerprint,
    stage_config,
    with_generated_data,
)
from lightstack.physics.pipeline_state import (
    environment,
    load_state,
    save_state,
    wandb_environment,
)
from lightstack.physics.stages import REQUIRES
from lightstack.physics.stages.predictors import ROLLOUT_STAGES
from lightstack.physics.train import train

EXIT_OK, EXIT_STAGE_FAILED, EXIT_GATE_FAILED = 0, 2, 3


@dataclass
class PipelineResult:
    run_dir: Path
    exit_code: int
    message: str
    summary: dict[str, Any]


# --- the pipeline ------------------------------------------------------------------------------
class _Run:
    """One invocation of the pipeline in one run directory (holding its lock).

    Under DDP Lightning starts the same command once per extra process; those processes
    (rank > 0) join each stage's training but never write, delete or evaluate anything.
    """

    def __init__(self, cfg: PhysicsConfig, run_dir: Path, log: Callable[[str], None]):
        self.rank = rank_zero_only.rank
        self.cfg = cfg
        self.run_dir = run_dir
        self.log = log
        self.stages = list(cfg.pipeline.stages)
        self.state = load_state(run_dir)
        self.summary: dict[str, Any] = {"run": cfg.name, "run_dir": str(run_dir), "stages": {}}

    def finish(self, code: int, message: str) -> PipelineResult:
        status = {EXIT_OK: "passed", EXIT_STAGE_FAILED: "stage_failed"}.get(code, "gates_failed")
        self.summary |= {"status": status, "exit_code": code, "message": message}
        if self.rank == 0:
            atomic_write_json(self.run_dir / "summary.json", self.summary)
            self.log(message)
        return PipelineResult(self.run_dir, code, message, self.summary)

    def _save(self) -> None:
        if self.rank == 0:
            save_state(self.run_dir, self.state)

    def _finished(self, stage: str) -> bool:
        entry = self.state["stages"].get(stage)
        return bool(entry) and (self.run_dir / entry["checkpoint"]).is_file()

    def _start_from(self, stage: str) -> Path | None:
        """The checkpoint ``stage`` starts from (see ``check_order``)."""
        required = REQUIRES.get(stage)
        if required is None:
            return None
        if required in self.stages:
            return self.run_dir / self.state["stages"][required]["checkpoint"]
        return Path(self.cfg.init_from) if self.cfg.init_from else None

    def _dependents(self, stage: str) -> list[str]:
        """``stage`` and every stage of the pipeline that starts from it, directly or not."""
        chain = [stage]
        for other in self.stages:
            if REQUIRES.get(other) in chain and other not in chain:
                chain.append(other)
        return chain

    def train_stages(self) -> PipelineResult | None:
        """Train what is not finished yet; a result only when a stage failed."""
        check_order(self.cfg)
        configs = {s: stage_config(self.cfg, s) for s in self.stages}  # every error first
        configs = {s: with_generated_data(c, self.run_dir, self.log) for s, c in configs.items()}
        write_run_config(self.cfg, self.run_dir)
        env = wandb_environment(self.cfg, self.run_dir)
        for stage in self.stages:
            expected = fingerprint(configs[stage])
            if self._finished(stage):
                entry = self.state["stages"][stage]
                if entry["fingerprint"] != expected:
                    raise PipelineError(
                        f"stage {stage} in {self.run_dir} finished with a different "
                        "configuration; use a new --run-dir (or restore the config) instead of "
                        "mixing two configurations in one run"
                    )
                self.summary["stages"][stage] = entry | {"resumed": True}
                self.log(f"stage {stage}: finished earlier, reusing {entry['checkpoint']}")
                continue
            for stale in self._dependents(stage):  # they started from what is retrained now
                self.state["stages"].pop(stale, None)
                if stale != stage:
                    self.state.get("started", {}).pop(stale, None)
            resume = self._resumable(stage, expected)
            self.state.setdefault("started", {})[stage] = expected
            self._save()
            start = self._start_from(stage)
            cfg = configs[stage].model_copy(update={"init_from": str(start) if start else None})
            failure = self._train(stage, cfg, expected, env, resume)
            if failure is not None:
                return failure
        return None

    def _resumable(self, stage: str, expected: str) -> bool:
        """Whether ``stage`` was started with this config and left a ``last.ckpt`` to resume."""
        last = last_checkpoint(self.run_dir / "stages" / stage)
        return self.state.get("started", {}).get(stage) == expected and last.is_file()

    def _train(
        self, stage: str, cfg: PhysicsConfig, expected: str, env: dict[str, str], resume: bool
    ) -> PipelineResult | None:
        stage_dir = self.run_dir / "stages" / stage
        if resume:
            self.log(f"stage {stage}: resuming from {last_checkpoint(stage_dir)}")
        else:
            if stage_dir.exists() and self.rank == 0:
                shutil.rmtree(stage_dir)
            self.log(f"stage {stage}: training in {stage_dir}")
        started = time.perf_counter()
        try:
            with environment(env):
                result = train(cfg, stage_dir, resume="auto" if resume else "never")
            checkpoint = result.best_checkpoint or result.last_checkpoint
            if checkpoint is None or not checkpoint.is_file():
                raise RuntimeError("training wrote no checkpoint")
            bad = sorted(k for k, v in result.metrics.items() if not math.isfinite(v))
            if bad:
                raise RuntimeError(f"metrics {bad} are not finite")
        except Exception as exc:
            if self.rank == 0:
                stage_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(stage_dir / "error.txt", traceback.format_exc())
            self.state["failed"] = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
            self._save()
            self.summary |= {"failed_stage": stage, "error": self.state["failed"]["error"]}
            return self.finish(
                EXIT_STAGE_FAILED,
                f"stage {stage} failed: {type(exc).__name__}: {exc} "
                f"(traceback: {stage_dir / 'error.txt'})",
            )
        entry = {
            "checkpoint": str(checkpoint.resolve().relative_to(self.run_dir.resolve())),
            "fingerprint": expected,
            "wall_s": time.perf_counter() - started,
            "finished_at": dt.datetime.now().isoformat(timespec="seconds"),
            "metrics": result.metrics,
        }
        self.state["stages"][stage] = entry
        self.state.pop("failed", None)
        self._save()
        self.summary["stages"][stage] = entry | {"resumed": False}
        return None

    def lineage(self, stage: str) -> list[str]:
        """``stage`` and the stages of this pipeline it starts from, oldest first."""
        chain = [stage]
        while (required := REQUIRES.get(chain[0])) in self.stages:
            chain.insert(0, required)
        return chain

    def context(self, stage: str) -> RunContext:
        """What judging ``stage`` reads: the training metrics of ``stage`` and of the stages it
        starts from (its own win), never those of a stage it does not build on (a steady_prior
        trained after it logs ``val/nrmse`` too)."""
        chain = self.lineage(stage)
        entries = [self.state["stages"][s] for s in chain]
        metrics: dict[str, float] = {}
        for entry in entries:
            metrics.update(entry["metrics"])
        return RunContext(
            name=self.cfg.name,
            stages=chain,
            run_dir=self.run_dir,
            train_metrics=metrics,
            histories={s: self.run_dir / "stages" / s / "history.json" for s in chain},
            train_wall_s=sum(e["wall_s"] for e in entries),
        )

    def evaluate(self) -> PipelineResult:
        if self.rank != 0:
            return PipelineResult(self.run_dir, EXIT_OK, f"rank {self.rank}: stages done", {})
        rollout_stages = [s for s in self.stages if s in ROLLOUT_STAGES]
        stage = self.cfg.pipeline.eval_stage or rollout_stages[-1]
        checkpoint = self.run_dir / self.state["stages"][stage]["checkpoint"]
        context = self.context(stage)
        n = self.cfg.pipeline.small_eval_trajectories
        self.log(f"quick evaluation of {stage} on {n} test trajectories")
        small = evaluate_checkpoint(
            checkpoint,
            self.run_dir / "eval_small",
            settings=self.cfg,
            max_trajectories=n,
            context=context,
            publish=False,
        )
        gates = [g.to_dict() for g in judge(self.cfg.gates, judged_metrics(small, context))]
        self.summary["small_eval"] = {
            "trajectories": small["metrics"]["all"]["trajectories"],
            "gates": gates,
        }
        if not all(g["passed"] for g in gates):
            return self.finish(EXIT_GATE_FAILED, _gate_message("quick evaluation", gates))
        self.log(f"full evaluation of {stage}")
        full = evaluate_checkpoint(
            checkpoint, self.run_dir / "eval", settings=self.cfg, context=context
        )
        self.summary["eval"] = {k: v for k, v in full.items() if k != "metrics"}
        self.summary["metrics"] = full["metrics"]["all"]
        if not full["gates_passed"]:
            return self.finish(EXIT_GATE_FAILED, _gate_message("full evaluation", full["gates"]))
        verdict = "promoted to champion" if full["promoted"] else "not promoted"
        return self.finish(EXIT_OK, f"pipeline passed ({verdict}); report: {full['report']}")


def _gate_message(where: str, gates: list[dict[str, Any]]) -> str:
    failed = [g for g in gates if not g["passed"]]
    return f"{len(failed)} gate(s) failed in the {where}: " + "; ".join(
        str(g["message"]) for g in failed
    )


def run_pipeline(
    cfg: PhysicsConfig,
    run_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> PipelineResult:
    """Train, evaluate and judge; never raises for a failed stage or gate (see the exit code)."""
    with claim_run_dir(run_dir, cfg.name) as path:
        run = _Run(cfg, path, log)
        return run.train_stages() or run.evaluate()
