"""Pieces the sub-commands share: the trainer options of every ``train`` command."""

import typer
from typer.testing import CliRunner

from lightstack.cli import app
from lightstack.cli_common import ConfigPath, trainer_options


def test_trainer_options_reach_the_command_as_dotted_overrides():
    seen: dict = {}
    demo = typer.Typer()

    @demo.command()
    @trainer_options
    def train(config: ConfigPath, *, trainer_flags: list[str]) -> None:
        seen.update(config=str(config), flags=trainer_flags)

    args = ["--config", "c.yaml", "--num-nodes", "2", "--no-sync-batchnorm", "--tune-lr"]
    result = CliRunner().invoke(demo, args)
    assert result.exit_code == 0, result.output
    assert seen == {
        "config": "c.yaml",
        "flags": ["trainer.num_nodes=2", "trainer.sync_batchnorm=false", "training.tune.lr=true"],
    }
    assert CliRunner().invoke(demo, ["--config", "c.yaml"]).exit_code == 0
    assert seen["flags"] == []


def test_both_train_commands_offer_the_trainer_options():
    for family in ("physics", "video"):
        result = CliRunner().invoke(app, [family, "train", "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        for option in ("--config", "--devices-per-node", "--accumulate-grad-batches", "--tune-lr"):
            assert option in result.output, (family, option)
