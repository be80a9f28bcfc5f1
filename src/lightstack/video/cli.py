"""``lightstack video ...``: synthetic data, training, prediction and challenge scoring."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from lightstack.cli_common import (
    OVERRIDES,
    ConfigPath,
    Resume,
    RunDir,
    console,
    reports_errors,
    trainer_options,
)

video_app = typer.Typer(
    no_args_is_help=True, help="Multi-view foul recognition on SoccerNet MVFoul data."
)
F = TypeVar("F", bound=Callable[..., Any])
_RANGE = re.compile(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?")
_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def video_errors(func: F) -> F:
    """Unreadable clips and existing output folders end the command with a message, like other
    bad input."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from lightstack.video.data.decode import ClipError

        try:
            return func(*args, **kwargs)
        except (ClipError, FileExistsError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


def parse_views(text: str) -> tuple[int, int]:
    """``"2..4"`` -> ``(2, 4)``; ``"3"`` -> ``(3, 3)``."""
    match = _RANGE.fullmatch(text)
    if match is None:
        raise typer.BadParameter(f"expected MIN..MAX or N (e.g. 2..4), got {text!r}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 1 <= low <= high:
        raise typer.BadParameter(f"need 1 <= MIN <= MAX, got {text!r}")
    return low, high


def parse_size(text: str, square: bool = False) -> tuple[int, int]:
    """``"64x48"`` -> ``(64, 48)`` (height x width); ``square`` also takes ``"224"`` (224x224)."""
    if square and text.strip().isdigit():
        return int(text), int(text)
    match = _SIZE.fullmatch(text)
    if match is None:
        example = "224 or 224x398" if square else "64x64"
        raise typer.BadParameter(f"expected HxW (e.g. {example}), got {text!r}")
    return int(match.group(1)), int(match.group(2))


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar, shown from the first ``update(done, total)`` on."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    bar = Progress(*columns, console=console, transient=False)
    tasks: list[TaskID] = []

    def update(done: int, total: int) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task(description, total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()


def _table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    return table


@video_app.command("synth")
@reports_errors
@video_errors
def synth(
    out: Annotated[Path, typer.Option(help="Folder of the MVFoul tree to write.")],
    actions: Annotated[int, typer.Option(min=1, help="Actions over all splits.")] = 400,
    views: Annotated[str, typer.Option(help="Views per action: MIN..MAX or N.")] = "2..4",
    frames: Annotated[int, typer.Option(min=1, help="Frames per clip.")] = 16,
    size: Annotated[str, typer.Option(help="Frame size HxW (even numbers).")] = "64x64",
    seed: Annotated[int, typer.Option(help="Seed of the generated scenes and labels.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing split folders.")] = False,
) -> None:
    """Write a synthetic MVFoul tree (train/valid/test, annotations.json, H.264 clips)."""
    from lightstack.video.data.synthetic import synthesize

    view_range, hw = parse_views(views), parse_size(size)
    with progress_bar("synthesising actions") as update:
        summary = synthesize(
            out, actions, view_range, frames, hw, seed, overwrite=overwrite, progress=update
        )
    rows = {
        split: f"{s['actions']} actions ({s['scored']} scored), {s['clips']} clips"
        for split, s in summary["splits"].items()
    }
    console.print(_table(f"synthetic MVFoul tree {out}", rows))
    window = summary["window"]
    console.print(
        f"read it with data.root={out} data.frames={frames} data.start={window['start']} "
        f"data.end={window['end']} data.fps={window['fps']} data.size=[{hw[0]},{hw[1]}]"
    )


@video_app.command("prepare")
@reports_errors
@video_errors
def prepare(
    data: Annotated[Path, typer.Option(help="MVFoul root holding the split folders.")],
    out: Annotated[Path, typer.Option(help="Cache folder to write (CACHE/<split>/ per split).")],
    size: Annotated[str, typer.Option(help="Frame size: N (NxN) or HxW.")] = "224",
    start: Annotated[int, typer.Option(min=0, help="First frame of the cached span.")] = 63,
    end: Annotated[int, typer.Option(min=1, help="End (exclusive) of the cached span.")] = 87,
    fps: Annotated[
        float, typer.Option(min=0.1, max=25.0, help="Frame rate the span is kept at (25: all).")
    ] = 25.0,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Decoding processes (default: one per core).")
    ] = None,
) -> None:
    """Decode every clip's frame window once into a cache that `video train/predict --data` read."""
    from lightstack.video.data.cache import prepare_cache

    if end <= start:
        raise typer.BadParameter(f"--end ({end}) must be greater than --start ({start})")
    hw = parse_size(size, square=True)
    with progress_bar("decoding clips") as update:
        summary = prepare_cache(
            data, out, size=hw, start=start, end=end, fps=fps, workers=workers, progress=update
        )
    rows = {
        split: f"{s['decoded']} decoded, {s['reused']} already cached, {len(s['missing'])} missing"
        for split, s in summary["splits"].items()
    }
    console.print(_table(f"clip cache {summary['out']} ({summary['seconds']:.1f} s)", rows))
    console.print(
        f"read it with data.root={out} (frames {start}..{end - 1} at {hw[0]}x{hw[1]}; "
        f"data.size=[{hw[0]},{hw[1]}])"
    )


@video_app.command("train", context_settings=OVERRIDES)
@reports_errors
@video_errors
@trainer_options
def train(
    ctx: typer.Context,
    config: ConfigPath,
    data: Annotated[
        Path | None,
        typer.Option(help="MVFoul root or `video prepare` cache holding the splits (data.root)."),
    ] = None,
    run_dir: RunDir = None,
    resume: Resume = "auto",
    *,
    trainer_flags: list[str],
) -> None:
    """Train; dotted overrides follow the options (trainer.max_epochs=3 model.ema=true)."""
    from lightstack.core.config import load_config
    from lightstack.video.config import VideoConfig
    from lightstack.video.train import train as train_video

    overrides = [*ctx.args, *trainer_flags] + ([f"data.root={data}"] if data is not None else [])
    cfg = load_config(config, overrides, VideoConfig)
    result = train_video(cfg, run_dir, resume=resume)
    rows: dict[str, Any] = {
        name: result.metrics[name]
        for name in ("val/action/bal_acc", "val/offence/bal_acc", "val/leaderboard")
        if name in result.metrics
    }
    test_metrics = (result.test or {}).get("metrics")
    if test_metrics:
        rows["test leaderboard (challenge rules)"] = test_metrics["leaderboard_value"]
    console.print(_table("last validation", rows))
    console.print(f"run directory: {result.run_dir}\nbest checkpoint: {result.best_checkpoint}")


@video_app.command("predict")
@reports_errors
@video_errors
def predict(
    ckpt: Annotated[Path, typer.Option(help="Checkpoint written by `video train`.")],
    data: Annotated[
        Path, typer.Option(help="Split folder (e.g. DIR/test) of action_<id>/, raw or cached.")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Predictions file (default: RUN_DIR/predictions.json).")
    ] = None,
    run_dir: RunDir = None,
    weights: Annotated[str, typer.Option(help="ema (what was validated) or raw.")] = "ema",
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=1, help="Actions per batch (default: eval.batch_size or data.batch_size)."
        ),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option(
            min=0, help="Decoding worker processes (default: eval.num_workers or data.num_workers)."
        ),
    ] = None,
) -> None:
    """Predict every action of a split folder; write the challenge's predictions format."""
    from lightstack.core.run import default_run_dir
    from lightstack.video.inference import predict_split

    if out is None:
        out = (run_dir or default_run_dir("predict")) / "predictions.json"
    with progress_bar("predicting batches") as update:
        summary = predict_split(
            ckpt,
            data,
            out,
            weights=weights,  # type: ignore[arg-type]
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=update,
        )
    console.print(f"{summary['n_predicted']} actions predicted on {summary['device']}: {out}")
    if summary["dropped_actions"]:
        console.print(f"[yellow]no readable clip, not predicted:[/] {summary['dropped_actions']}")


@video_app.command("eval")
@reports_errors
def evaluate(
    pred: Annotated[Path, typer.Option(help="Predictions file in the challenge format.")],
    labels: Annotated[Path, typer.Option(help="The split's annotations.json.")],
    run_dir: RunDir = None,
    plots: Annotated[bool, typer.Option(help="Write confusion-matrix PNGs.")] = True,
) -> None:
    """Score predictions with the official challenge rules; write metrics.json."""
    from lightstack.core.run import default_run_dir
    from lightstack.video.inference import score_predictions

    out_dir = run_dir or default_run_dir("video-eval")
    metrics = score_predictions(pred, labels, out_dir, plots=plots)
    keys = (
        "accuracy_action",
        "balanced_accuracy_action",
        "accuracy_offence_severity",
        "balanced_accuracy_offence_severity",
        "leaderboard_value",
        "n_scored",
    )
    console.print(_table(f"{pred} against {labels}", {k: metrics[k] for k in keys}))
    if metrics["missing_predictions"]:
        console.print(
            f"[yellow]{len(metrics['missing_predictions'])} scored actions have no prediction "
            "(counted as wrong)[/]"
        )
    console.print(f"metrics: {Path(out_dir) / 'metrics.json'}")
