"""Multi-GPU and multi-node launch: a SLURM batch script or a ``torchrun`` command.

Both start one process per GPU running the same ``lightstack`` training command with
``trainer.num_nodes`` and ``trainer.devices`` set to match, so Lightning finds its rank and the
world size in the environment the launcher sets (``SLURMEnvironment`` from ``SLURM_*``,
``TorchElasticEnvironment`` from torchrun's ``RANK``/``WORLD_SIZE``...). Every process writes
into one run directory, so it is fixed here: on a file system all nodes share.
"""

from __future__ import annotations

import datetime as dt
import shlex

LAUNCHER_KEYS = ("trainer.num_nodes", "trainer.devices", "trainer.accelerator")
SLURM_RUN_DIR = '"runs/${SLURM_JOB_ID}-${SLURM_JOB_NAME}"'


def launch_overrides(nodes: int, gpus_per_node: int) -> list[str]:
    """The dotted overrides every launched process gets."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"nodes ({nodes}) and GPUs per node ({gpus_per_node}) must be >= 1")
    return [
        f"trainer.num_nodes={nodes}",
        f"trainer.devices={gpus_per_node}",
        "trainer.accelerator=gpu",
    ]


def _has_run_dir(args: list[str]) -> bool:
    return any(a == "--run-dir" or a.startswith("--run-dir=") for a in args)


def distributed_args(command: list[str], nodes: int, gpus_per_node: int, run_dir: str) -> list[str]:
    """``lightstack`` arguments of each process: ``command`` + run directory + launch overrides.

    ``command`` is what would follow ``lightstack`` on one machine (``physics train --config
    c.yaml trainer.max_epochs=5``); ``--run-dir`` is added after the sub-command words unless
    the command has one.
    """
    if not command:
        raise ValueError("no command to launch: give the lightstack command after '--'")
    clash = [a for a in command if a.split("=", 1)[0] in LAUNCHER_KEYS]
    if clash:
        raise ValueError(
            f"{', '.join(clash)}: set by the launcher from --nodes/--gpus-per-node; remove it"
        )
    args = list(command)
    if not _has_run_dir(args):
        words = next((i for i, a in enumerate(args) if a.startswith("-") or "=" in a), len(args))
        args[words:words] = ["--run-dir", run_dir]
    return args + launch_overrides(nodes, gpus_per_node)


def _shell(tokens: list[str], raw: set[str]) -> str:
    """Quote tokens for bash, except the ``raw`` ones (the launcher's own ``"${...}"``)."""
    return " ".join(t if t in raw else shlex.quote(t) for t in tokens)


def slurm_script(
    command: list[str],
    nodes: int,
    gpus_per_node: int,
    job_name: str = "lightstack",
    time: str = "04:00:00",
    partition: str | None = None,
    account: str | None = None,
    cpus_per_task: int = 8,
    setup: list[str] | None = None,
) -> str:
    """An ``sbatch`` script: one task per GPU, ``srun lightstack ...`` on every task.

    The run directory defaults to ``runs/<job id>-<job name>``, so a job requeued after
    Lightning's ``SIGUSR1`` checkpoint (``--signal``/``--requeue``) resumes in the same place.
    """
    args = distributed_args(command, nodes, gpus_per_node, SLURM_RUN_DIR)
    directives = [
        f"--job-name={job_name}",
        f"--nodes={nodes}",
        f"--ntasks-per-node={gpus_per_node}",
        f"--gpus-per-node={gpus_per_node}",
        f"--cpus-per-task={cpus_per_task}",
        f"--time={time}",
        *([f"--partition={partition}"] if partition else []),
        *([f"--account={account}"] if account else []),
        "--signal=SIGUSR1@90",
        "--requeue",
        "--output=%x-%j.out",
    ]
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {d}" for d in directives),
        "# Lightning reads the SLURM_* variables: one task per GPU, ranks from SLURM_PROCID.",
        "set -euo pipefail",
        *(setup or []),
        f"srun lightstack {_shell(args, {SLURM_RUN_DIR})}",
    ]
    return "\n".join(lines) + "\n"


def torchrun_command(
    command: list[str],
    nodes: int,
    gpus_per_node: int,
    master_addr: str | None = None,
    master_port: int = 29500,
    job_name: str = "lightstack",
    run_dir: str | None = None,
) -> str:
    """The ``torchrun`` command to run on every node (the same line on each).

    One node uses ``--standalone``; several meet at ``master_addr:master_port`` (c10d
    rendezvous; default: the ``MASTER_ADDR`` variable of each node's shell).
    """
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args = distributed_args(command, nodes, gpus_per_node, run_dir or f"runs/{stamp}-{job_name}")
    launcher = ["torchrun", f"--nproc-per-node={gpus_per_node}"]
    raw: set[str] = set()
    if nodes == 1:
        launcher.append("--standalone")
    else:
        endpoint = f"{master_addr}:{master_port}"
        if master_addr is None:
            endpoint = f'"${{MASTER_ADDR:?set MASTER_ADDR to the address of node 0}}:{master_port}"'
            raw.add(endpoint)
        launcher += [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-id={job_name}"]
        launcher += ["--rdzv-endpoint", endpoint]
    return _shell([*launcher, "--no-python", "lightstack", *args], raw)
