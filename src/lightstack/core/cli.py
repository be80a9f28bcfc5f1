"""The command line's core: the root group that loads families on demand, ``config validate``,
``ckpt convert`` and ``launch``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from lightstack.core.config import load_config, read_yaml
from lightstack.core.families import command_group, family_names, schema_for
from lightstack.core.io import atomic_write_text
from lightstack.core.launch import launch_overrides, slurm_script, torchrun_command

console = Console(stderr=True)
COMMAND = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES_USAGE = "[OPTIONS] [OVERRIDES]..."
F = TypeVar("F", bound=Callable[..., Any])


def _finish_help(command: Any) -> None:
    """Help that names what a command takes and is never cut, for ``command`` and below.

    A command that takes dotted overrides says so in its usage line (``[OPTIONS]
    [OVERRIDES]...``), and group listings show each command's whole first paragraph, wrapped,
    instead of click's first 45 characters.
    """
    if command.help and not command.short_help:
        command.short_help = " ".join(inspect.cleandoc(command.help).split("\n\n")[0].split())
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            _finish_help(sub)
    elif (
        command.context_settings.get("allow_extra_args") and command.options_metavar == "[OPTIONS]"
    ):
        command.options_metavar = OVERRIDES_USAGE


class FamilyGroup(TyperGroup):
    """The root ``lightstack`` group: a registered family's commands are imported when named.

    So ``lightstack config validate`` on a physics config never imports the video family, and a
    new family needs no change here (see ``core/families.py``). Help is plain click text, which
    wraps at the terminal width instead of cutting option names.
    """

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [
            *family_names(),
            *(n for n in super().list_commands(ctx) if n not in family_names()),
        ]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in family_names():
            app = command_group(cmd_name)
            app.rich_markup_mode = self.rich_markup_mode
            self.commands[cmd_name] = typer.main.get_group(app)
        command = self.commands.get(cmd_name)
        if command is not None:
            _finish_help(command)
        return command


def plain_group(help: str | None = None) -> typer.Typer:
    """A sub-command group with the root's help style (plain, wrapped, nothing cut)."""
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help)


ckpt_app = plain_group("Convert checkpoints between Lightning, state_dict and safetensors.")
config_app = plain_group("Check configuration files.")
launch_app = plain_group(
    "Write the SLURM script or torchrun command for a multi-GPU / multi-node run."
)


def _reports_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        # ConfigError and CheckpointError are ValueErrors; checkpoints is not imported here
        # because lightning (under it) would slow every command's start and help.
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


@config_app.command("validate", context_settings=COMMAND)
@_reports_errors
def config_validate(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")],
) -> None:
    """Report every invalid field of a config at once, with its dotted path.

    Dotted overrides after the options (trainer.max_epochs=3) are checked with the file, as
    train would apply them. The config's family: key names the schema.
    """
    family = read_yaml(config).get("family")
    load_config(config, ctx.args, schema_for(family, config))
    console.print(f"{config}: valid {family} configuration")


# The callback keeps `ckpt` a command group although it has a single command (`ckpt convert`).
@ckpt_app.callback()
def ckpt_group() -> None:
    pass


class Format(StrEnum):
    lightning = "lightning"
    state_dict = "state_dict"
    safetensors = "safetensors"


@ckpt_app.command("convert")
@_reports_errors
def ckpt_convert(
    src: Annotated[Path, typer.Argument(help="A lightstack checkpoint (any format).")],
    dst: Annotated[Path, typer.Argument(help="Output file.")],
    to: Annotated[
        Format | None,
        typer.Option(help="Output format (default: from DST's suffix: .ckpt, .pt, .safetensors)."),
    ] = None,
) -> None:
    """Convert between a Lightning checkpoint, a plain state_dict and safetensors.

    Optimizer, scheduler and loop state are dropped; weights and the lightstack metadata
    (config, fingerprint) are kept, so the result loads for inference like the original.
    """
    from lightstack.core.checkpoints import convert_checkpoint, load_checkpoint

    path = convert_checkpoint(src, dst, to.value if to else None)
    ckpt = load_checkpoint(path)
    meta = ckpt["lightstack"]
    console.print(
        f"wrote {path}: {len(ckpt['state_dict'])} tensors, {meta.get('family')} "
        f"{meta.get('stage')} checkpoint"
    )


def _config_of(command: list[str]) -> Path | None:
    for i, arg in enumerate(command):
        if arg in ("--config", "-c") and i + 1 < len(command):
            return Path(command[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def check_launch_config(command: list[str], nodes: int, gpus_per_node: int) -> None:
    """Validate the config named in ``command`` as the launched processes will load it."""
    path = _config_of(command)
    if path is None:
        return
    overrides = [a for a in command if "=" in a and not a.startswith("-")]
    family = read_yaml(path).get("family")
    cfg = load_config(
        path, overrides + launch_overrides(nodes, gpus_per_node), schema_for(family, path)
    )
    if cfg.trainer.strategy == "ddp_spawn":
        raise ValueError(
            f"{path}: trainer.strategy=ddp_spawn starts its own processes; the launcher already "
            "starts one per GPU, so use ddp, ddp_find_unused_parameters_true, fsdp or auto"
        )


def _emit(text: str, out: Path | None, how: str) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    out.chmod(0o755)
    console.print(f"wrote {out}; {how}")


Nodes = Annotated[int, typer.Option(min=1, help="Number of nodes.")]
Gpus = Annotated[int, typer.Option(min=1, help="GPUs (processes) per node.")]
JobName = Annotated[str, typer.Option(help="Job name (and default run directory suffix).")]
Out = Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")]


@launch_app.command("slurm", context_settings=COMMAND, options_metavar="[OPTIONS] -- COMMAND...")
@_reports_errors
def launch_slurm(
    ctx: typer.Context,
    nodes: Nodes = 1,
    gpus_per_node: Gpus = 8,
    job_name: JobName = "lightstack",
    time: Annotated[str, typer.Option(help="Wall-clock limit (HH:MM:SS).")] = "04:00:00",
    partition: Annotated[str | None, typer.Option(help="SLURM partition (#SBATCH -p).")] = None,
    account: Annotated[str | None, typer.Option(help="SLURM account (#SBATCH -A).")] = None,
    cpus_per_task: Annotated[
        int, typer.Option(min=1, help="CPU cores per GPU process (data loading workers).")
    ] = 8,
    setup: Annotated[
        list[str] | None,
        typer.Option(help="Shell line run before srun (e.g. 'source .venv/bin/activate')."),
    ] = None,
    out: Out = None,
) -> None:
    """SLURM batch script for the lightstack command after '--'.

    Example: lightstack launch slurm --nodes 2 --gpus-per-node 8 --out train.sbatch --
    physics train --config configs/physics/burgers1d.yaml
    """
    command = list(ctx.args)
    check_launch_config(command, nodes, gpus_per_node)
    script = slurm_script(
        command, nodes, gpus_per_node, job_name, time, partition, account, cpus_per_task, setup
    )
    _emit(script, out, f"submit it with: sbatch {out}")


@launch_app.command("torchrun", context_settings=COMMAND, options_metavar="[OPTIONS] -- COMMAND...")
@_reports_errors
def launch_torchrun(
    ctx: typer.Context,
    nodes: Nodes = 1,
    gpus_per_node: Gpus = 8,
    master_addr: Annotated[
        str | None, typer.Option(help="Node 0's address (default: $MASTER_ADDR on each node).")
    ] = None,
    master_port: Annotated[int, typer.Option(help="Node 0's rendezvous port.")] = 29500,
    job_name: JobName = "lightstack",
    out: Out = None,
) -> None:
    """The torchrun command (the same on every node) for the lightstack command after '--'.

    The run directory (add --run-dir to the command to choose it) must be on a file system
    every node shares.
    """
    command = list(ctx.args)
    check_launch_config(command, nodes, gpus_per_node)
    line = torchrun_command(command, nodes, gpus_per_node, master_addr, master_port, job_name)
    text = f"#!/bin/bash\nset -euo pipefail\n{line}\n" if out else line + "\n"
    _emit(text, out, f"run it on each of the {nodes} node(s)")
