"""Help a user can read at 80 columns: no cut option names, overrides named in usage lines."""

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from lightstack.cli import app

runner = CliRunner()


def _commands(group, path=()):
    """(path, command) of every command below ``group``, loading each family."""
    ctx = group.make_context("lightstack", ["--help"], resilient_parsing=True)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = list(_commands(get_command(app)))


def test_every_command_is_reached():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"physics train", "video predict", "config validate", "quickstart"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_help_at_80_columns_shows_whole_option_names(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    assert "…" not in result.output
    command = dict(COMMANDS)[path]
    for param in command.params:
        names = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
        for name in names:
            assert name in result.output, name
        assert param.help or not names, f"{' '.join(path)} {names[0]} has no description"


@pytest.mark.parametrize(
    "path",
    [
        ("physics", "train"),
        ("physics", "eval"),
        ("video", "train"),
        ("quickstart",),
        ("config", "validate"),
    ],
)
def test_usage_names_the_dotted_overrides(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "[OPTIONS] [OVERRIDES]..." in result.output.splitlines()[0]
    assert "overrides" in result.output.lower().split("options:")[0].split("\n", 1)[1]


def test_top_level_help_speaks_to_users():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert "lightstack quickstart" in result.output
    assert "parse, load config" not in result.output
