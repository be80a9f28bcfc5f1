"""Data generation with a progress bar, for the CLI and the quickstart."""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lightstack.physics.data.generate import GENERATORS, generate


def parse_params(items: list[str]) -> dict[str, float | int | str]:
    """``["nu=0.01", "nx=256"]`` -> ``{"nu": 0.01, "nx": 256}`` (values parsed as YAML)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"solver parameter {item!r} is not of the form key=value")
        params[key.strip()] = yaml.safe_load(value)
    return params


def generate_with_progress(equation: str, out: Path, samples: int, seed: int, params: dict) -> Path:
    if equation not in GENERATORS:
        raise ValueError(f"unknown equation {equation!r}; expected one of {sorted(GENERATORS)}")
    columns = (
        TextColumn(f"generating {equation}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(equation, total=samples)
        return generate(
            equation,
            Path(out),
            samples=samples,
            seed=seed,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            **params,
        )
