"""Gates: bounds a model's metrics must meet before it counts as passing.

Gates read one flat namespace of metrics (see ``gate_metrics``): the training metrics of the
run as logged (``val/nrmse``), the evaluation's overall metrics by their own name
(``rollout_nrmse@16``) and each task's evaluation metrics as ``<task>/<metric>``. A gate whose
metric is missing or not finite fails: a misspelt gate must not pass silently. Whatever the
configured gates, an evaluation whose predictions hold NaN or Inf fails the built-in gate
``nonfinite_predictions`` (``judge``; the number of test samples whose prediction holds NaN
or Inf): NaN is never a good result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from lightstack.physics.config import GateSpec


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool

    @property
    def message(self) -> str:
        bounds = " and ".join(
            f"{op} {bound:g}"
            for op, bound in ((">=", self.min), ("<=", self.max))
            if bound is not None
        )
        verdict = "passed" if self.passed else "FAILED"
        if self.value is None:
            return f"gate {self.name}: {verdict}, metric not computed (needs {bounds})"
        return f"gate {self.name}: {verdict}, value {self.value:.6g} (needs {bounds})"

    def to_dict(self) -> dict[str, object]:
        return asdict(self) | {"message": self.message}


def gate_metrics(
    eval_results: Mapping[str, Mapping[str, float]] | None,
    train_metrics: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """One flat namespace: training metrics, overall eval metrics, ``<task>/<metric>``."""
    flat = {k: float(v) for k, v in (train_metrics or {}).items()}
    for group, values in (eval_results or {}).items():
        prefix = "" if group == "all" else f"{group}/"
        flat.update({f"{prefix}{k}": float(v) for k, v in values.items()})
    return flat


def check_gates(
    gates: Mapping[str, GateSpec | None], metrics: Mapping[str, float]
) -> list[GateResult]:
    """Check every gate that is switched on (a ``None`` spec is off), in config order."""
    results = []
    for name, spec in gates.items():
        if spec is None:
            continue
        raw = metrics.get(name)
        value = float(raw) if raw is not None and math.isfinite(float(raw)) else None
        passed = (
            value is not None
            and (spec.min is None or value >= spec.min)
            and (spec.max is None or value <= spec.max)
        )
        results.append(GateResult(name, value, spec.min, spec.max, passed))
    return results


def judge(gates: Mapping[str, GateSpec | None], metrics: Mapping[str, float]) -> list[GateResult]:
    """The configured gates, then ``nonfinite_predictions <= 0`` where it was measured."""
    results = check_gates(gates, metrics)
    if "nonfinite_predictions" in metrics and "nonfinite_predictions" not in gates:
        results += check_gates({"nonfinite_predictions": GateSpec(max=0)}, metrics)
    return results


def failed_gates(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]
