"""Publishing one evaluation: the gates, the leaderboard and its champion, ``report.html``
and ``summary.json``, and the lines ``physics eval`` prints about them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from lightstack.core.io import atomic_write_json
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.eval.gates import failed_gates, gate_metrics, judge
from lightstack.physics.eval.leaderboard import Leaderboard, task_set
from lightstack.physics.eval.report import read_step_log, write_report
from lightstack.physics.eval.rollout import RolloutSample, predict_trajectory


@torch.no_grad()
def samples_per_task(
    model: nn.Module, dataset: Dataset, task_names: list[str], count: int, device: str
) -> list[RolloutSample]:
    """Up to ``count`` rolled-out trajectories, spread over the tasks (at least one each)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    per_task = max(1, count // max(1, len(parts)))
    samples = []
    model = model.to(device).eval()
    for part in parts:
        for index in range(min(per_task, len(part))):
            item = {k: v.unsqueeze(0).to(device) for k, v in part[index].items()}
            prediction = predict_trajectory(model, item)
            task = int(item["task"])
            name = task_names[task] if task < len(task_names) else str(task)
            samples.append(
                RolloutSample(
                    name,
                    item["fields"][0].cpu(),
                    prediction[0].cpu(),
                    item["grid"][0].cpu(),
                    model.initial_step,
                )
            )
    return samples


@dataclass
class RunContext:
    """What evaluation knows of the run behind a checkpoint: its metrics, histories, cost."""

    name: str
    stages: list[str]
    run_dir: Path | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    histories: dict[str, Path] = field(default_factory=dict)
    train_wall_s: float | None = None

    @classmethod
    def of_checkpoint(cls, ckpt: str | Path, cfg: PhysicsConfig) -> RunContext:
        """Read ``train_metrics.json`` and ``history.json`` of the run that wrote ``ckpt``."""
        ckpt = Path(ckpt).resolve()
        run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
        metrics_file = run_dir / "train_metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        history = run_dir / "history.json"
        return cls(
            cfg.name,
            [cfg.stage],
            run_dir,
            {k: float(v) for k, v in metrics.items()},
            {cfg.stage: history} if history.is_file() else {},
        )


def judged_metrics(summary: dict[str, Any], context: RunContext) -> dict[str, float]:
    """What gates and the champion rule read: ``gate_metrics``, wall-clock costs and the
    one-step improvement over persistence."""
    metrics = gate_metrics(summary["metrics"], context.train_metrics)
    metrics["eval_wall_s"] = summary["eval_wall_s"]
    if "improvement_over_persistence" in summary:
        metrics["improvement_over_persistence"] = summary["improvement_over_persistence"]
    if context.train_wall_s is not None:
        metrics["train_wall_s"] = context.train_wall_s
    return metrics


def headline(summary: dict[str, Any]) -> str:
    """The one line ``physics eval`` prints first: the main numbers of any stage."""
    overall = summary["metrics"]["all"]
    if "onestep_nrmse" not in overall:  # steady_prior: one solution per sample
        return (
            f"nRMSE {overall['nrmse']:.4f}, RMSE {overall['rmse']:.4g}, "
            f"max error {overall['max_error']:.4g} ({overall['samples']} samples)"
        )
    return (
        f"one-step nRMSE {overall['onestep_nrmse']:.4f} "
        f"(persistence {overall['persistence_onestep_nrmse']:.4f}); "
        f"rollout nRMSE {overall['rollout_nrmse']:.4f} "
        f"(persistence {overall['persistence_rollout_nrmse']:.4f}); "
        f"{overall['trajectories']} trajectories"
    )


def nonfinite_problem(summary: dict[str, Any]) -> str | None:
    """One line naming the checkpoint when its predictions held NaN or Inf, else ``None``."""
    overall = summary["metrics"]["all"]
    bad = int(overall.get("nonfinite_predictions", 0))
    if not bad:
        return None
    total = overall.get("trajectories", overall.get("samples"))
    return (
        f"checkpoint {summary['checkpoint']}: its predictions hold NaN or Inf in {bad} of "
        f"{total} test samples, so its metrics are NaN and it failed the gates"
    )


def publish_evaluation(
    summary: dict[str, Any],
    cfg: PhysicsConfig,
    out_dir: Path,
    context: RunContext,
    task_names: list[str],
    predictions_png: Path | None,
) -> dict[str, Any]:
    """Gates, leaderboard and champion, ``report.html`` and ``summary.json`` of one evaluation."""
    metrics = judged_metrics(summary, context)
    gates = judge(cfg.gates, metrics)
    passed = not failed_gates(gates)
    run_dir = (context.run_dir or out_dir).resolve()
    board_path = Path(cfg.champion.leaderboard or run_dir.parent / "leaderboard.csv")
    tasks = task_set(task_names)
    decision = Leaderboard(board_path).submit(
        {
            "run": context.name,
            "run_dir": str(run_dir),
            "checkpoint": str(Path(summary["checkpoint"]).resolve()),
            "stage": "+".join(context.stages),
            "task_set": tasks,
        },
        {k: v for k, v in metrics.items() if math.isfinite(v)},
        cfg.champion,
        passed,
    )
    histories = {
        stage: json.loads(path.read_text())
        for stage, path in context.histories.items()
        if path.is_file()
    }
    report = write_report(
        out_dir / "report.html",
        title=f"{context.name}: {' -> '.join(context.stages)}",
        info={
            "checkpoint": summary["checkpoint"],
            "data": ", ".join(summary["data"]),
            "task set": tasks,
            "main metric": f"{cfg.champion.metric} ({cfg.champion.mode})",
            "evaluation": f"{summary['engine']}, {summary['eval_wall_s']:.1f} s",
        },
        results=summary["metrics"],
        predictions_png=predictions_png,
        histories=histories,
        gates=gates,
        decision=decision,
        step_logs={
            stage: read_step_log(path.parent / "logs" / "metrics.csv")
            for stage, path in context.histories.items()
        },
    )
    verdict = {
        "run": context.name,
        "stages": context.stages,
        "task_set": tasks,
        "gates": [g.to_dict() for g in gates],
        "gates_passed": passed,
        "failed_gates": [g.name for g in gates if not g.passed],
        **decision.to_dict(),
        "main_metric": cfg.champion.metric,
        "main_value": metrics.get(cfg.champion.metric),
        "leaderboard": str(board_path),
        "report": str(report),
        "metrics_file": str(out_dir / "metrics.json"),
    }
    atomic_write_json(out_dir / "summary.json", verdict)
    return verdict
