"""Run directories: where a command writes its resolved config, logs, checkpoints and results.

A run directory is resolved to an absolute path once, when a command claims it
(``claim_run_dir``): Lightning's ``ModelCheckpoint`` keeps its folder as an absolute real path
and treats any other spelling of ``last.ckpt`` as a different file, so every path derived from
the run directory must be spelled the same way.

While a command trains in a run directory it holds the directory's lock (``.run.lock``, an OS
file lock that dies with its process, so the lock of a killed run is taken over by the next);
a second command on the same folder is refused with ``RunDirInUse`` naming the process that
holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from pydantic import BaseModel

from lightstack.core.callbacks.preemption import LAST_NAME
from lightstack.core.checkpoints import CheckpointError, load_checkpoint
from lightstack.core.config import save_config
from lightstack.core.io import atomic_write_json

RUN_DIR_ENV = "LIGHTSTACK_RUN_DIR"
LOCK_NAME = ".run.lock"
OWNER_NAME = ".run.lock.owner"
CHECKPOINTS = "checkpoints"


class RunDirInUse(OSError):
    """Another process holds the run directory's lock."""


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``runs/<date>-<time>-<name>/`` with the name made safe for a folder.

    The directory is also put in ``LIGHTSTACK_RUN_DIR``: Lightning starts the other ranks of a
    multi-device run as child processes of the same command (``LOCAL_RANK`` set), and they
    must write into their parent's directory, not one stamped a second later. Under torchrun
    or SLURM pass ``--run-dir`` (the ``launch`` commands do).
    """
    if os.environ.get("LOCAL_RANK") and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    path = (Path(root) / f"{stamp}-{safe}").resolve()
    os.environ[RUN_DIR_ENV] = str(path)
    return path


@contextlib.contextmanager
def claim_run_dir(run_dir: str | Path | None, name: str) -> Iterator[Path]:
    """Create the run directory, hold its lock for the block, yield its absolute path.

    ``RunDirInUse`` when another live process holds it. Processes of rank > 0 (started by
    rank 0 for a multi-device run) work under rank 0's lock and take none.
    """
    path = Path(run_dir).resolve() if run_dir is not None else default_run_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    if not _writable(path):
        raise PermissionError(f"run directory {path} is not writable")
    if rank_zero_only.rank != 0:
        yield path
        return
    lock = FileLock(str(path / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout as exc:
        raise RunDirInUse(
            f"run directory {path} is in use by {_owner(path)}; wait for it to finish, stop it, "
            "or use another --run-dir"
        ) from exc
    try:
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv}
        atomic_write_json(path / OWNER_NAME, owner)
        yield path
    finally:
        (path / OWNER_NAME).unlink(missing_ok=True)
        lock.release()


def _owner(path: Path) -> str:
    """Who holds ``path``'s lock, as far as its owner file says."""
    try:
        owner = json.loads((path / OWNER_NAME).read_text())
        command = " ".join([Path(owner["argv"][0]).name, *owner["argv"][1:]])
        return f"process {owner['pid']} on {owner['host']} ({command})"
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return "another process"


def write_run_config(cfg: BaseModel, run_dir: Path) -> None:
    """Write the resolved config as ``run_dir/config.yaml`` (once every check has passed)."""
    if rank_zero_only.rank == 0:
        save_config(cfg, run_dir / "config.yaml")


def _writable(path: Path) -> bool:
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        return False
    return True


def last_checkpoint(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints/last.ckpt``, absolute: the checkpoint a re-run resumes from."""
    return Path(run_dir).resolve() / CHECKPOINTS / LAST_NAME


def resume_checkpoint(run_dir: str | Path, resume: str) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from.

    ``auto``: ``<run_dir>/checkpoints/last.ckpt`` when it exists (re-running a command with the
    same ``--run-dir`` continues it), else a fresh start; ``never``: always a fresh start;
    anything else is the path of a checkpoint, which must exist. A ``last.ckpt`` that cannot be
    read (truncated, overwritten, non-finite weights) gives way, with a warning, to the newest
    readable checkpoint of the run; when there is none its error is raised.
    """
    if resume == "never":
        return None
    last = last_checkpoint(run_dir)
    if resume == "auto":
        return str(_readable_or_fallback(last, last.parent)) if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return resume


def _readable_or_fallback(last: Path, folder: Path) -> Path:
    try:
        load_checkpoint(last, mmap=True)
        return last
    except CheckpointError as exc:
        error = exc
    others = sorted(
        (p for p in folder.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime
    )
    for candidate in reversed(others):
        try:
            ckpt = load_checkpoint(candidate, mmap=True)
        except CheckpointError:
            continue
        if "optimizer_states" in ckpt and "loops" in ckpt:
            rank_zero_warn(
                f"{error}\nresuming from {candidate} instead (global step "
                f"{ckpt.get('global_step', '?')}), the newest readable checkpoint of the run",
            )
            return candidate
    raise CheckpointError(
        f"{error}\nno other readable checkpoint in {folder} to resume from; start over with "
        "--resume never"
    ) from error
