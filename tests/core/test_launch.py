"""SLURM script and torchrun command generation, and the ``launch`` CLI."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from lightstack.core.cli import launch_app
from lightstack.core.launch import distributed_args, slurm_script, torchrun_command

TRAIN = ["physics", "train", "--config", "c.yaml", "trainer.max_epochs=5"]

CONFIG = """
family: physics
data: {train_files: [a.h5]}
trainer: {strategy: ddp}
"""


def test_distributed_args_add_run_dir_and_launch_overrides():
    args = distributed_args(TRAIN, 2, 8, "runs/x")
    assert args == [
        "physics",
        "train",
        "--run-dir",
        "runs/x",
        "--config",
        "c.yaml",
        "trainer.max_epochs=5",
        "trainer.num_nodes=2",
        "trainer.devices=8",
        "trainer.accelerator=gpu",
    ]
    kept = distributed_args([*TRAIN, "--run-dir", "shared/run"], 1, 2, "runs/x")
    assert kept.count("--run-dir") == 1 and "shared/run" in kept


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([], "no command to launch"),
        ([*TRAIN, "trainer.devices=4"], "trainer.devices=4: set by the launcher"),
    ],
)
def test_bad_commands(command, message):
    with pytest.raises(ValueError, match=message):
        distributed_args(command, 1, 1, "runs/x")
    with pytest.raises(ValueError, match="must be >= 1"):
        distributed_args(TRAIN, 0, 1, "runs/x")


def test_slurm_script_one_task_per_gpu():
    script = slurm_script(TRAIN, 2, 4, partition="gpu", setup=["source .venv/bin/activate"])
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in (
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--partition=gpu",
        "--signal=SIGUSR1@90",
        "--requeue",
    ):
        assert f"#SBATCH {directive}" in lines
    assert not any("--account" in line for line in lines)
    assert lines.index("source .venv/bin/activate") < len(lines) - 1
    srun = lines[-1]
    assert srun.startswith("srun lightstack physics train --run-dir ")
    assert '"runs/${SLURM_JOB_ID}-${SLURM_JOB_NAME}"' in srun  # expanded by bash at run time
    assert srun.endswith("trainer.num_nodes=2 trainer.devices=4 trainer.accelerator=gpu")
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_torchrun_single_and_multi_node():
    one = shlex.split(torchrun_command(TRAIN, 1, 4, run_dir="runs/one"))
    assert one[:5] == [
        "torchrun",
        "--nproc-per-node=4",
        "--standalone",
        "--no-python",
        "lightstack",
    ]
    assert one[5:9] == ["physics", "train", "--run-dir", "runs/one"]
    two = torchrun_command(TRAIN, 2, 8, master_addr="10.0.0.1", job_name="burgers")
    parts = shlex.split(two)
    assert "--nnodes=2" in parts and "--rdzv-backend=c10d" in parts
    assert parts[parts.index("--rdzv-endpoint") + 1] == "10.0.0.1:29500"
    assert "--rdzv-id=burgers" in parts and parts[-2:] == [
        "trainer.devices=8",
        "trainer.accelerator=gpu",
    ]
    run_dir = parts[parts.index("--run-dir") + 1]
    assert run_dir.startswith("runs/") and run_dir.endswith("-burgers")
    env = torchrun_command(TRAIN, 2, 8)
    assert '--rdzv-endpoint "${MASTER_ADDR:?' in env and ':29500"' in env
    echo = 'torchrun() { printf "%s\\n" "$@"; }; '  # prints the arguments bash passes
    expanded = subprocess.run(
        ["bash", "-c", echo + env],
        env={**os.environ, "MASTER_ADDR": "node0"},
        text=True,
        capture_output=True,
    )
    assert "node0:29500" in expanded.stdout.splitlines()


def test_cli_writes_scripts_and_validates_the_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    runner = CliRunner()
    out = tmp_path / "job.sbatch"
    cmd = ["slurm", "--nodes", "2", "--gpus-per-node", "8", "--out", str(out), "--"]
    result = runner.invoke(launch_app, [*cmd, "physics", "train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "sbatch" in result.output and os.access(out, os.X_OK)
    assert "trainer.num_nodes=2 trainer.devices=8" in out.read_text()

    result = runner.invoke(
        launch_app,
        ["torchrun", "--gpus-per-node", "2", "--", "physics", "train", "-c", str(config)],
    )
    assert result.exit_code == 0 and result.output.startswith("torchrun --nproc-per-node=2")

    spawn = ["physics", "train", "--config", str(config), "trainer.strategy=ddp_spawn"]
    result = runner.invoke(launch_app, ["slurm", "--", *spawn])
    assert result.exit_code == 1 and "ddp_spawn starts its own processes" in result.output
    result = runner.invoke(launch_app, ["slurm", "--", *spawn[:4], "model.widht=3"])
    assert result.exit_code == 1 and "model.widht: unknown key" in result.output
