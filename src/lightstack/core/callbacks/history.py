"""Per-epoch metric history written to ``history.csv`` and ``history.json`` in the run directory."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

from lightstack.core.io import atomic_write_json, atomic_write_text


class TrainingHistory(Callback):
    """Collect ``trainer.callback_metrics`` once per epoch (after validation) and write them.

    The files are rewritten atomically at the end of every epoch, so a killed run keeps the
    history up to its last finished epoch. Reports read ``history.json``.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.rows: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key, value in sorted(trainer.callback_metrics.items()):
            v = float(value)
            row[key] = v if math.isfinite(v) else None
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        self._write()

    @rank_zero_only
    def _write(self) -> None:
        atomic_write_json(self.run_dir / "history.json", self.rows)
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.run_dir / "history.csv", buf.getvalue())

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
