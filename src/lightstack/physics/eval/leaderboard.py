"""Leaderboard CSV shared by runs, and the champion rule that decides promotions.

One row per evaluated model, appended, with a fixed set of columns so older rows stay readable;
every metric of the run is kept as JSON in the ``metrics`` column. Exactly one row per task set
(the sorted task names joined by ``+``) is marked ``champion``. Deciding and recording happen
under one file lock, so two evaluations finishing together cannot both beat the same champion.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from lightstack.core.io import atomic_write_text
from lightstack.physics.config import ChampionConfig

COLUMNS = [
    "time",
    "run",
    "run_dir",
    "checkpoint",
    "stage",
    "task_set",
    "trajectories",
    "main_metric",
    "main_value",
    "onestep_nrmse",
    "rollout_nrmse",
    "persistence_rollout_nrmse",
    "mass_drift",
    "train_wall_s",
    "eval_wall_s",
    "gates_passed",
    "promoted",
    "champion",
    "metrics",
]
METRIC_COLUMNS = (
    "trajectories",
    "onestep_nrmse",
    "rollout_nrmse",
    "persistence_rollout_nrmse",
    "mass_drift",
    "train_wall_s",
    "eval_wall_s",
)


def task_set(tasks: list[str]) -> str:
    return "+".join(sorted(tasks))


@dataclass
class Decision:
    """Whether a run was promoted, the champion row it was compared with, and why."""

    promoted: bool
    champion: dict[str, Any] | None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        champion = None
        if self.champion is not None:
            champion = {k: v for k, v in self.champion.items() if k != "metrics"}
        return {"promoted": self.promoted, "champion": champion, "reasons": self.reasons}


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def decide(
    metrics: Mapping[str, float],
    champion: Mapping[str, Any] | None,
    cfg: ChampionConfig,
    gates_passed: bool,
) -> Decision:
    """Promote when the gates pass and the run beats ``champion`` as ``cfg`` requires.

    The main metric must improve by the relative ``cfg.margin``; each metric in
    ``cfg.max_ratios`` must stay within ``ratio x`` the champion's value (lower is better).
    The first run of a task set that passes its gates becomes its champion.
    """
    row = dict(champion) if champion is not None else None
    if not gates_passed:
        return Decision(False, row, ["gates failed"])
    value = _finite(metrics.get(cfg.metric))
    if value is None:
        return Decision(False, row, [f"main metric {cfg.metric} was not computed"])
    if champion is None:
        return Decision(True, None, ["no champion for this task set yet"])
    theirs = json.loads(champion.get("metrics") or "{}")
    reference = _finite(theirs.get(cfg.metric))
    if reference is None:
        return Decision(False, row, [f"champion has no {cfg.metric} to compare with"])
    reasons = []
    if cfg.mode == "min":
        needed = reference * (1 - cfg.margin)
        beats = value < needed
    else:
        needed = reference * (1 + cfg.margin)
        beats = value > needed
    relation = "<" if cfg.mode == "min" else ">"
    reasons.append(
        f"{cfg.metric} {value:.6g} {'beats' if beats else 'does not beat'} "
        f"champion {reference:.6g} by margin {cfg.margin:g} (needs {relation} {needed:.6g})"
    )
    within = True
    for name, ratio in cfg.max_ratios.items():
        mine, best = _finite(metrics.get(name)), _finite(theirs.get(name))
        if mine is None or best is None:
            reasons.append(f"{name} not compared (missing on one side)")
            continue
        ok = mine <= ratio * best
        within &= ok
        reasons.append(
            f"{name} {mine:.6g} {'within' if ok else 'exceeds'} {ratio:g} x champion {best:.6g}"
        )
    return Decision(beats and within, row, reasons)


class Leaderboard:
    """The CSV at ``path`` (created on first use), guarded by ``<path>.lock``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = FileLock(str(self.path) + ".lock")

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != COLUMNS:
                raise ValueError(
                    f"leaderboard {self.path} has columns {reader.fieldnames}, expected "
                    f"{COLUMNS}; move the file aside to start a new leaderboard"
                )
            return list(reader)

    def champion(self, tasks: str) -> dict[str, str] | None:
        return next(
            (r for r in self.rows() if r["task_set"] == tasks and r["champion"] == "true"), None
        )

    def submit(
        self,
        entry: Mapping[str, Any],
        metrics: Mapping[str, float],
        cfg: ChampionConfig,
        gates_passed: bool,
    ) -> Decision:
        """Compare a run with its task set's champion, append its row and move the mark.

        A model evaluated again (same checkpoint and task set) replaces its earlier row.

        ``entry`` fills the descriptive columns (``run``, ``run_dir``, ``checkpoint``,
        ``stage``, ``task_set``); the metric columns come from ``metrics``.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            rows = [  # a re-evaluated model replaces its own row
                r
                for r in self.rows()
                if (r["checkpoint"], r["task_set"]) != (entry["checkpoint"], entry["task_set"])
            ]
            current = next(
                (r for r in rows if r["task_set"] == entry["task_set"] and r["champion"] == "true"),
                None,
            )
            decision = decide(metrics, current, cfg, gates_passed)
            if decision.promoted:
                for r in rows:
                    if r["task_set"] == entry["task_set"]:
                        r["champion"] = "false"
            rows.append(self._row(entry, metrics, cfg, gates_passed, decision.promoted))
            atomic_write_text(self.path, _to_csv(rows))
        return decision

    @staticmethod
    def _row(
        entry: Mapping[str, Any],
        metrics: Mapping[str, float],
        cfg: ChampionConfig,
        gates_passed: bool,
        promoted: bool,
    ) -> dict[str, str]:
        def text(value: Any) -> str:
            if value is None:
                return ""
            if isinstance(value, bool):
                return str(value).lower()
            if isinstance(value, float):
                return repr(value)
            return str(value)

        values: dict[str, Any] = {
            "time": dt.datetime.now().isoformat(timespec="seconds"),
            **{k: entry.get(k) for k in COLUMNS if k in entry},
            "main_metric": cfg.metric,
            "main_value": metrics.get(cfg.metric),
            "gates_passed": gates_passed,
            "promoted": promoted,
            "champion": promoted,
            "metrics": json.dumps(dict(metrics), sort_keys=True),
        }
        values.update({name: metrics.get(name) for name in METRIC_COLUMNS})
        if values["trajectories"] is not None:
            values["trajectories"] = int(values["trajectories"])
        return {k: text(values.get(k)) for k in COLUMNS}


def _to_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
