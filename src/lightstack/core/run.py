"""Run directories: where a command writes its resolved config, logs, checkpoints and results."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from pydantic import BaseModel

from lightstack.core.config import save_config

RUN_DIR_ENV = "LIGHTSTACK_RUN_DIR"


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
    path = Path(root) / f"{stamp}-{safe}"
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def prepare_run_dir(cfg: BaseModel, run_dir: str | Path | None, name: str) -> Path:
    """Create the run directory and write the resolved config into it as ``config.yaml``."""
    path = Path(run_dir) if run_dir is not None else default_run_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    if not _writable(path):
        raise PermissionError(f"run directory {path} is not writable")
    save_config(cfg, path / "config.yaml")
    return path


def _writable(path: Path) -> bool:
    probe = path / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        return False
    return True


def resume_checkpoint(run_dir: str | Path, resume: str) -> str | None:
    """The checkpoint ``trainer.fit`` resumes from.

    ``auto``: ``<run_dir>/checkpoints/last.ckpt`` when it exists (re-running a command with the
    same ``--run-dir`` continues it), else a fresh start; ``never``: always a fresh start;
    anything else is the path of a checkpoint, which must exist.
    """
    if resume == "never":
        return None
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    if resume == "auto":
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return resume
