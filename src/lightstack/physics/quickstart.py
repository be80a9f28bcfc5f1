"""``lightstack quickstart``: generate a small data set, train the operator, evaluate, summarise.

The run does a fixed amount of work (epochs, one CPU thread), so the numbers it prints do not
depend on how fast or how busy the machine is; only the wall-clock time does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lightstack.core.config import load_config
from lightstack.core.io import atomic_write_json
from lightstack.core.run import default_run_dir
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.generate import default_filename
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.generation import generate_with_progress
from lightstack.physics.train import train

# What README.md and docs/quickstart.md state the shipped settings print (test set, one step
# ahead, improvement over persistence); a run more than ``TOLERANCE`` below it says so.
DOCUMENTED_IMPROVEMENT = 11.3
TOLERANCE = 0.2


def run_quickstart(
    config: Path, overrides: list[str], run_dir: Path | None, console: Console
) -> dict:
    """Run the whole loop; return (and write to ``summary.json``) the headline numbers."""
    started = time.perf_counter()
    cfg = load_config(config, overrides, PhysicsConfig)
    if cfg.generate is None:
        raise ValueError(f"{config}: the quickstart needs a 'generate' section")
    run_dir = Path(run_dir).resolve() if run_dir else default_run_dir(cfg.name)
    data_file = run_dir / "data" / default_filename(cfg.generate.equation)
    if not data_file.exists():
        gen = cfg.generate
        generate_with_progress(gen.equation, data_file, gen.samples, gen.seed, dict(gen.params))
    cfg = load_config(
        config, [*overrides, f"data.train_files={json.dumps([str(data_file)])}"], PhysicsConfig
    )
    result = train(cfg, run_dir)
    checkpoint = result.best_checkpoint or result.last_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training in {run_dir} wrote no checkpoint")
    report = evaluate_checkpoint(checkpoint, run_dir / "eval")
    overall = report["metrics"]["all"]
    steps = int(result.metrics.get("train/optimizer_steps", 0))
    train_s = result.metrics.get("time/train_s", 0.0)
    summary = {
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "test_onestep_nrmse": overall["onestep_nrmse"],
        "persistence_onestep_nrmse": overall["persistence_onestep_nrmse"],
        "improvement_over_persistence": report["improvement_over_persistence"],
        "test_rollout_nrmse": overall["rollout_nrmse"],
        "persistence_rollout_nrmse": overall["persistence_rollout_nrmse"],
        "optimizer_steps": steps,
        "train_time_s": train_s,
        "steps_per_s": steps / train_s if train_s else None,
        "resumed": result.resumed_from is not None,
        "wall_time_s": time.perf_counter() - started,
        "metrics": str(run_dir / "eval" / "metrics.json"),
        "plot": str(run_dir / "eval" / "predictions.png"),
    }
    atomic_write_json(run_dir / "summary.json", summary)
    console.print(_table(summary))
    console.print(_training_line(summary))
    warning = documented_result_warning(summary["improvement_over_persistence"], overrides)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    console.print(
        f"report: {run_dir / 'eval'} (metrics.json, predictions.png, report.html); "
        f"summary: {run_dir / 'summary.json'}"
    )
    return summary


def _training_line(summary: dict) -> str:
    """Steps, training time and rate; a resumed run's are its totals over every command."""
    rate = summary["steps_per_s"]
    pace = f"{rate:.1f} steps/s" if rate else "no steps timed"
    trained = (
        f"trained {summary['optimizer_steps']} optimizer steps in "
        f"{summary['train_time_s']:.0f} s ({pace})"
    )
    if summary["resumed"]:
        trained += f", in total with the earlier run(s) in {summary['run_dir']} it resumed"
    return f"{trained}; whole command {summary['wall_time_s']:.0f} s"


def documented_result_warning(improvement: float, overrides: list[str]) -> str | None:
    """A sentence when ``improvement`` is far below what the docs state, else None."""
    if improvement >= (1 - TOLERANCE) * DOCUMENTED_IMPROVEMENT:
        return None
    cause = (
        f"the overrides {' '.join(overrides)} change the documented settings"
        if overrides
        else "with the shipped settings this points to a broken install or a changed dependency"
    )
    return (
        f"the one-step improvement over persistence is {improvement:.1f}x, far below the "
        f"{DOCUMENTED_IMPROVEMENT:.1f}x that README.md documents; {cause} "
        "(docs/quickstart.md)"
    )


def _table(summary: dict) -> Table:
    table = Table(title="quickstart: test set (physical units)")
    table.add_column("metric")
    table.add_column("surrogate", justify="right")
    table.add_column("persistence", justify="right")
    table.add_row(
        "one-step nRMSE",
        f"{summary['test_onestep_nrmse']:.4f}",
        f"{summary['persistence_onestep_nrmse']:.4f}",
    )
    table.add_row(
        "rollout nRMSE",
        f"{summary['test_rollout_nrmse']:.4f}",
        f"{summary['persistence_rollout_nrmse']:.4f}",
    )
    table.add_row(
        "improvement (one-step)", f"{summary['improvement_over_persistence']:.1f}x", "1.0x"
    )
    return table
