"""lightstack: train, evaluate and ship physics surrogates and multi-view video models.

Start with `lightstack quickstart`. Commands that train or evaluate take dotted config
overrides after their options, e.g. trainer.max_epochs=3 data.batch_size=16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import lightstack.families  # noqa: F401  (registers the physics and video families)
from lightstack.cli_common import OVERRIDES, RunDir, console, find_config, reports_errors
from lightstack.core.cli import FamilyGroup, ckpt_app, config_app, launch_app

app = typer.Typer(
    cls=FamilyGroup,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help=__doc__,
)
app.add_typer(config_app, name="config")
app.add_typer(ckpt_app, name="ckpt")
app.add_typer(launch_app, name="launch")


@app.command("quickstart", context_settings=OVERRIDES)
@reports_errors
def quickstart(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option(help="Default: configs/physics/quickstart.yaml")
    ] = None,
    run_dir: RunDir = None,
) -> None:
    """Generate a small Burgers data set, train the operator, evaluate it and write a report.

    Dotted overrides after the options change the quickstart config (trainer.max_epochs=3).
    """
    from lightstack.physics.quickstart import run_quickstart

    path = config or find_config("physics/quickstart.yaml")
    run_quickstart(path, ctx.args, run_dir, console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
