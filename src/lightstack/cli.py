"""``lightstack`` command line: parse, load config, call. No training logic lives here."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from lightstack.core.checkpoints import CheckpointError
from lightstack.core.config import ConfigError, read_yaml

console = Console(stderr=True)
app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
physics_app = typer.Typer(no_args_is_help=True, help="Latent PDE surrogates on PDEBench data.")
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
app.add_typer(physics_app, name="physics")
app.add_typer(config_app, name="config")

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
F = TypeVar("F", bound=Callable[..., Any])

RunDir = Annotated[
    Path | None,
    typer.Option(help="Run directory (default: runs/<date>-<time>-<name>/)."),
]
ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
DataFiles = Annotated[
    list[Path] | None, typer.Option("--data", help="Data file; repeat for several.")
]


def reports_errors(func: F) -> F:
    """Turn expected errors into one readable message and exit code 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lightstack.physics.data.pdebench import PDEBenchError

        try:
            return func(*args, **kwargs)
        except (ConfigError, PDEBenchError, CheckpointError, FileNotFoundError, ValueError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def find_config(name: str) -> Path:
    """A config shipped with lightstack: ``./configs/<name>`` or the source checkout's."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / "configs" / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config {name} not found under ./configs or the lightstack checkout")


def _physics_config(config: Path, overrides: list[str], data: list[Path] | None, stage: str | None):
    from lightstack.core.config import load_config
    from lightstack.physics.config import PhysicsConfig

    extra = list(overrides)
    if data:
        extra.append(f"data.train_files={json.dumps([str(p) for p in data])}")
    if stage:
        extra.append(f"stage={stage}")
    return load_config(config, extra, PhysicsConfig)


# --- physics --------------------------------------------------------------------------------
@physics_app.command("generate")
@reports_errors
def physics_generate(
    equation: Annotated[
        str, typer.Argument(help="burgers1d, advection1d, diffreact1d, ns2d, darcy2d")
    ],
    out: Annotated[Path, typer.Option(help="HDF5 file to write.")],
    samples: Annotated[int, typer.Option(min=1)] = 64,
    seed: int = 0,
    nx: Annotated[int | None, typer.Option(help="Grid cells per axis.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="Solver parameter key=value (e.g. nu=0.01); repeatable."),
    ] = None,
) -> None:
    """Write a PDEBench-format HDF5 file from a built-in solver."""
    from lightstack.physics.generation import generate_with_progress, parse_params

    params = parse_params(param or [])
    if nx is not None:
        params["nx"] = nx
    path = generate_with_progress(equation, out, samples, seed, params)
    console.print(f"wrote {path}")


@physics_app.command("inspect")
@reports_errors
def physics_inspect(file: Path) -> None:
    """Print the layout, fields, shapes and value ranges of a PDEBench HDF5 file."""
    from lightstack.physics.data.inspect import describe

    typer.echo(describe(file))


@physics_app.command("train", context_settings=OVERRIDES)
@reports_errors
def physics_train(
    ctx: typer.Context,
    config: ConfigPath,
    stage: Annotated[str | None, typer.Option(help="operator|diff_residual|...")] = None,
    data: DataFiles = None,
    run_dir: RunDir = None,
) -> None:
    """Train one stage; dotted overrides follow the options (trainer.max_epochs=3)."""
    from lightstack.physics.train import train

    cfg = _physics_config(config, ctx.args, data, stage)
    result = train(cfg, run_dir)
    console.print(f"run directory: {result.run_dir}\nbest checkpoint: {result.best_checkpoint}")


@physics_app.command("eval")
@reports_errors
def physics_eval(
    ckpt: Annotated[Path, typer.Option(help="Lightning checkpoint of a physics stage.")],
    data: DataFiles = None,
    run_dir: RunDir = None,
    device: str = "cpu",
) -> None:
    """Evaluate a checkpoint: metrics.json and predictions.png in the run directory."""
    from lightstack.core.run import default_run_dir
    from lightstack.physics.evaluate import evaluate_checkpoint

    out = run_dir or default_run_dir("eval")
    summary = evaluate_checkpoint(ckpt, out, [str(p) for p in data] if data else None, device)
    overall = summary["metrics"]["all"]
    console.print(
        f"one-step nRMSE {overall['onestep_nrmse']:.4f} "
        f"(persistence {overall['persistence_onestep_nrmse']:.4f}); "
        f"rollout nRMSE {overall['rollout_nrmse']:.4f}\nmetrics: {out / 'metrics.json'}"
    )


# --- config ---------------------------------------------------------------------------------
@config_app.command("validate", context_settings=OVERRIDES)
@reports_errors
def config_validate(ctx: typer.Context, config: ConfigPath) -> None:
    """Report every invalid field of a config at once, with its dotted path."""
    from lightstack.core.config import load_config
    from lightstack.families import schema_for

    family = read_yaml(config).get("family")
    load_config(config, ctx.args, schema_for(family, config))
    console.print(f"{config}: valid {family} configuration")


# --- quickstart -----------------------------------------------------------------------------
@app.command("quickstart", context_settings=OVERRIDES)
@reports_errors
def quickstart(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="Default: configs/physics/quickstart.yaml")
    ] = None,
    run_dir: RunDir = None,
) -> None:
    """Generate a small Burgers data set, train the operator, evaluate it and write a report."""
    from lightstack.physics.quickstart import run_quickstart

    path = config or find_config("physics/quickstart.yaml")
    run_quickstart(path, ctx.args, run_dir, console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
