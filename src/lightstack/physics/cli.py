"""``lightstack physics ...``: generate, inspect, train, eval and pipeline. Parse, load, call.

Exit codes: 0 passed, 1 invalid input, 2 a pipeline stage failed, 3 a gate failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lightstack.cli_common import (
    OVERRIDES,
    ConfigPath,
    DataFiles,
    Resume,
    RunDir,
    console,
    reports_errors,
    trainer_options,
)

physics_app = typer.Typer(no_args_is_help=True, help="Latent PDE surrogates on PDEBench data.")


def load_physics_config(
    config: Path, overrides: list[str], data: list[Path] | None = None, stage: str | None = None
):
    """The config file plus ``--data`` / ``--stage`` (as overrides) and the dotted overrides."""
    from lightstack.core.config import load_config
    from lightstack.physics.config import PhysicsConfig

    extra = list(overrides)
    if data:
        extra.append(f"data.train_files={json.dumps([str(p) for p in data])}")
    if stage:
        extra.append(f"stage={stage}")
    return load_config(config, extra, PhysicsConfig)


@physics_app.command("generate")
@reports_errors
def generate_command(
    equation: Annotated[
        str, typer.Argument(help="burgers1d, advection1d, diffreact1d, ns2d, darcy2d")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="HDF5 file to write (default: data/EQUATION.hdf5, or .h5 for ns2d's seed "
            "groups: the suffixes PDEBench's loaders expect)."
        ),
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Trajectories to simulate.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the random initial conditions.")] = 0,
    nx: Annotated[int | None, typer.Option(help="Grid cells per spatial axis.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="Solver parameter (e.g. nu=0.01); repeatable."),
    ] = None,
) -> None:
    """Write a PDEBench-format HDF5 file from a built-in solver."""
    from lightstack.physics.data.generate import default_filename, suffix_warning
    from lightstack.physics.generation import generate_with_progress, parse_params

    params = parse_params(param or [])
    if nx is not None:
        params["nx"] = nx
    out = out or Path("data") / default_filename(equation)
    path = generate_with_progress(equation, out, samples, seed, params)
    console.print(f"wrote {path}")
    warning = suffix_warning(equation, path)
    if warning:
        console.print(warning, style="yellow", highlight=False)


@physics_app.command("inspect")
@reports_errors
def inspect_command(
    file: Annotated[Path, typer.Argument(help="HDF5 file in any layout lightstack reads.")],
) -> None:
    """Print the layout, fields, shapes and value ranges of a PDEBench HDF5 file."""
    from lightstack.physics.data.inspect import describe

    typer.echo(describe(file))


@physics_app.command("train", context_settings=OVERRIDES)
@reports_errors
@trainer_options
def train_command(
    ctx: typer.Context,
    config: ConfigPath,
    stage: Annotated[
        str | None,
        typer.Option(
            help="operator, diff_residual, consistency_distill, steady_prior or fno "
            "(default: the config's stage)."
        ),
    ] = None,
    data: DataFiles = None,
    run_dir: RunDir = None,
    resume: Resume = "auto",
    *,
    trainer_flags: list[str],
) -> None:
    """Train one stage; dotted overrides follow the options (trainer.max_epochs=3)."""
    from lightstack.physics.train import train

    cfg = load_physics_config(config, [*ctx.args, *trainer_flags], data, stage)
    result = train(cfg, run_dir, resume=resume)
    console.print(f"run directory: {result.run_dir}\nbest checkpoint: {result.best_checkpoint}")


@physics_app.command("pipeline", context_settings=OVERRIDES)
@reports_errors
def pipeline_command(ctx: typer.Context, config: ConfigPath, run_dir: RunDir = None) -> None:
    """Train pipeline.stages in order, evaluate, apply the gates; re-run the same command to resume.

    Without --run-dir the run directory is runs/<name>-<hash of the training config>,
    so the same command finds the same directory and trains only what is not finished.
    Dotted overrides follow the options ('gates={val/nrmse: {max: 0.01}}').
    """
    from lightstack.core.config import load_config
    from lightstack.physics.config import PhysicsConfig
    from lightstack.physics.pipeline import run_pipeline
    from lightstack.physics.pipeline_config import default_run_dir

    cfg = load_config(config, ctx.args, PhysicsConfig)
    result = run_pipeline(
        cfg,
        run_dir or default_run_dir(cfg),
        log=lambda message: console.print(message, highlight=False, soft_wrap=True),
    )
    console.print(f"summary: {result.run_dir / 'summary.json'}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@physics_app.command("eval", context_settings=OVERRIDES)
@reports_errors
def eval_command(
    ctx: typer.Context,
    ckpt: Annotated[Path, typer.Option(help="Lightning checkpoint of any physics stage.")],
    data: DataFiles = None,
    run_dir: RunDir = None,
    device: Annotated[
        str, typer.Option(help="torch device to evaluate on: cpu, cuda or cuda:N.")
    ] = "cpu",
    engine: Annotated[
        str, typer.Option(help="torch (plain loop) or lightning (Trainer.predict)")
    ] = "torch",
) -> None:
    """Evaluate a checkpoint: metrics, gates, leaderboard, report.html and summary.json.

    Dotted overrides after the options change the eval, gates and champion settings stored in
    the checkpoint ('gates={val/nrmse: {max: 0.01}}', eval.horizons=[1,8]).
    """
    from lightstack.core.run import default_run_dir
    from lightstack.physics.eval.publish import headline, nonfinite_problem
    from lightstack.physics.evaluate import evaluate_checkpoint

    out = run_dir or default_run_dir("eval")
    files = [str(p) for p in data] if data else None
    summary = evaluate_checkpoint(
        ckpt,
        out,
        files,
        device,
        overrides=list(ctx.args),
        engine=engine,  # type: ignore[arg-type]
    )
    console.print(headline(summary), highlight=False)
    for gate in summary["gates"]:
        console.print(gate["message"], highlight=False)
    console.print(
        f"{'promoted to champion' if summary['promoted'] else 'not promoted'} "
        f"({summary['task_set']}); leaderboard: {summary['leaderboard']}\n"
        f"report: {summary['report']}\nsummary: {Path(out) / 'summary.json'}"
    )
    if problem := nonfinite_problem(summary):
        console.print(f"error: {problem}", style="bold red", highlight=False, soft_wrap=True)
        raise typer.Exit(3)
    if not summary["gates_passed"]:
        raise typer.Exit(3)
