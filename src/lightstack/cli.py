"""``lightstack`` command line: parse, load config, call. No training logic lives here.

Each family and core own their command groups (``physics/cli.py``, ``video/cli.py``,
``core/cli.py``); this module assembles them and holds the commands that span families.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lightstack.cli_common import (
    OVERRIDES,
    ConfigPath,
    RunDir,
    console,
    find_config,
    reports_errors,
)
from lightstack.core.cli import ckpt_app, launch_app
from lightstack.physics.cli import physics_app
from lightstack.video.cli import video_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
config_app = typer.Typer(no_args_is_help=True, help="Check configuration files.")
app.add_typer(physics_app, name="physics")
app.add_typer(video_app, name="video")
app.add_typer(config_app, name="config")
app.add_typer(ckpt_app, name="ckpt")
app.add_typer(launch_app, name="launch")


@config_app.command("validate", context_settings=OVERRIDES)
@reports_errors
def config_validate(ctx: typer.Context, config: ConfigPath) -> None:
    """Report every invalid field of a config at once, with its dotted path."""
    from lightstack.core.config import load_config, read_yaml
    from lightstack.families import schema_for

    family = read_yaml(config).get("family")
    load_config(config, ctx.args, schema_for(family, config))
    console.print(f"{config}: valid {family} configuration")


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
