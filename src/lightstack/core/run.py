"""Run directories: where a command writes its resolved config, logs, checkpoints and results."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from pydantic import BaseModel

from lightstack.core.config import save_config


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    """``runs/<date>-<time>-<name>/`` with the name made safe for a folder."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return Path(root) / f"{stamp}-{safe}"


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
