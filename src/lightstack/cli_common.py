"""What every ``lightstack`` sub-command shares: option types, error reporting, config lookup."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

console = Console(stderr=True)

# Commands that accept dotted config overrides after their options.
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
F = TypeVar("F", bound=Callable[..., Any])

RunDir = Annotated[
    Path | None,
    typer.Option(help="Run directory (default: runs/<date>-<time>-<name>/)."),
]
ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]
DataFiles = Annotated[
    list[Path] | None, typer.Option("--data", metavar="FILE", help="Data file; repeat for several.")
]
Resume = Annotated[
    str,
    typer.Option(
        help="auto (continue <run-dir>/checkpoints/last.ckpt if present), never, or a path."
    ),
]


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input, reported as one message instead of a traceback."""
    from lightstack.core.checkpoints import CheckpointError
    from lightstack.core.config import ConfigError

    return (ConfigError, CheckpointError, OSError, ValueError)


def reports_errors(func: F) -> F:
    """Turn expected errors into one readable message and exit code 1 (no traceback).

    Every domain error (``PDEBenchError``, ``AnnotationError``, ``ClipError``, ...) subclasses
    ``ValueError``; ``OSError`` covers missing files, full disks and unwritable directories.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except expected_errors() as exc:
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


DevicesPerNode = Annotated[int | None, typer.Option(help="GPUs per node (trainer.devices).")]
NumNodes = Annotated[int | None, typer.Option(help="Nodes (trainer.num_nodes).")]
AccumulateGradBatches = Annotated[
    int | None, typer.Option(help="Micro-batches per optimizer step.")
]
SyncBatchnorm = Annotated[
    bool | None, typer.Option("--sync-batchnorm/--no-sync-batchnorm", help="Sync BN across GPUs.")
]
TuneBatchSize = Annotated[
    bool | None, typer.Option("--tune-batch-size", help="Find the largest batch size first.")
]
TuneLr = Annotated[bool | None, typer.Option("--tune-lr", help="Run the LR finder first.")]

# The options every ``train`` command takes, in ``core.trainer.trainer_overrides``' order.
TRAINER_OPTIONS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    for name, annotation in (
        ("devices_per_node", DevicesPerNode),
        ("num_nodes", NumNodes),
        ("accumulate_grad_batches", AccumulateGradBatches),
        ("sync_batchnorm", SyncBatchnorm),
        ("tune_batch_size", TuneBatchSize),
        ("tune_lr", TuneLr),
    )
]


def trainer_options(command: F) -> F:
    """Give a typer command the trainer options of ``TRAINER_OPTIONS`` (``--devices-per-node``,
    ``--tune-lr``, ...). The command receives them as ``trainer_flags``: the dotted overrides
    (``trainer.devices=2``) of those that were given."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "trainer_flags"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lightstack.core.trainer import trainer_overrides

        values = [kwargs.pop(p.name) for p in TRAINER_OPTIONS]
        return command(*args, trainer_flags=trainer_overrides(*values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *TRAINER_OPTIONS])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *TRAINER_OPTIONS]}
    return wrapper  # type: ignore[return-value]
