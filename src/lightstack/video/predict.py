"""Challenge-format predictions and the official MVFoul score, as plain functions.

``write_predictions`` writes ``{"Actions": {"<id>": {"Action class", "Offence", "Severity"}}}``
with the strings the VARS baseline writes, so ``SoccerNet.Evaluation.MV_FoulRecognition.evaluate``
scores the file unchanged. ``evaluate`` computes what that function computes, including its quirks:

- an action counts as scored only if the label rules in ``lightstack.video.labels`` keep it;
- the offence is correct only if the predicted ``"Offence"`` string equals the *raw* ground-truth
  string (so a Dive annotated with offence ``""`` or ``"Between"``, or a ``"No Offence"`` spelt with
  a capital O, never matches what a model writes) and the predicted ``"Severity"`` equals ``""``
  for no offence, ``"1.0"`` for any Dive (even one graded yellow or red), and otherwise the
  ground-truth severity;
- a missing prediction counts as wrong; predictions for ids not scored are ignored;
- balanced accuracy is the mean over *all* classes of correct/support, so a class with no scored
  example makes it NaN (the official code divides 0 by 0 too).

The official function returns percentages; ``evaluate`` returns fractions in [0, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lightstack.core.io import atomic_write_json
from lightstack.video.labels import (
    ACTION_CLASSES,
    NO_OFFENCE_VALUES,
    OFFENCE_CLASSES,
    OFFENCE_OUTPUT,
    UNGRADED_SEVERITIES,
    AnnotationError,
    SkipReason,
    label_or_skip_reason,
    read_json,
)

PREDICTION_FIELDS: tuple[str, ...] = ("Action class", "Offence", "Severity")


def prediction_entry(action: int, offence: int) -> dict[str, str]:
    """The challenge-format entry for one action's predicted class indices."""
    if not 0 <= action < len(ACTION_CLASSES):
        raise ValueError(f"action class index {action} outside 0..{len(ACTION_CLASSES) - 1}")
    if not 0 <= offence < len(OFFENCE_CLASSES):
        raise ValueError(f"offence class index {offence} outside 0..{len(OFFENCE_CLASSES) - 1}")
    offence_str, severity = OFFENCE_OUTPUT[offence]
    return {"Action class": ACTION_CLASSES[action], "Offence": offence_str, "Severity": severity}


def write_predictions(
    path: str | Path, preds: Mapping[str, tuple[int, int]], set_name: str | None = None
) -> None:
    """Write ``{id: (action index, offence index)}`` atomically in the challenge format."""
    actions: dict[str, dict[str, str]] = {}
    for action_id, (action, offence) in preds.items():
        try:
            actions[str(action_id)] = prediction_entry(int(action), int(offence))
        except ValueError as exc:
            raise ValueError(f"prediction for action {action_id!r}: {exc}") from exc
    data: dict[str, Any] = {} if set_name is None else {"Set": set_name}
    data["Actions"] = actions
    atomic_write_json(path, data)


def _expected_strings(action: Mapping[str, Any]) -> tuple[str, str]:
    """The ``(Offence, Severity)`` strings a prediction must carry to count as correct."""
    offence = action["Offence"]
    if offence in NO_OFFENCE_VALUES:
        return offence, ""
    if action["Action class"] == "Dive":
        return offence, "1.0"
    severity = action["Severity"]
    return offence, "1.0" if severity in UNGRADED_SEVERITIES else severity


def _prediction(
    predictions: Mapping[str, Any], action_id: str, source: Path
) -> Mapping[str, Any] | None:
    pred = predictions.get(action_id)
    if pred is None:
        return None
    if not isinstance(pred, Mapping):
        raise AnnotationError(f"{source}: action {action_id!r}: expected an object, got {pred!r}")
    for name in PREDICTION_FIELDS:
        if name not in pred:
            raise AnnotationError(f"{source}: action {action_id!r}: missing field {name!r}")
    return pred


def evaluate(pred_path: str | Path, labels_path: str | Path) -> dict[str, Any]:
    """Score a predictions file against ``annotations.json`` exactly as the official evaluator.

    Returns ``accuracy_action``, ``accuracy_offence_severity``, ``balanced_accuracy_action``,
    ``balanced_accuracy_offence_severity`` and ``leaderboard_value`` (their mean) as fractions,
    plus ``n_scored``, ``n_skipped``, ``missing_predictions`` (ids) and per-class
    ``{task}_support`` / ``{task}_correct`` counts.
    """
    pred_path, labels_path = Path(pred_path), Path(labels_path)
    labels = read_json(labels_path)["Actions"]
    predictions = read_json(pred_path)["Actions"]

    support = {"action": np.zeros(len(ACTION_CLASSES)), "offence": np.zeros(len(OFFENCE_CLASSES))}
    correct = {task: np.zeros_like(counts) for task, counts in support.items()}
    missing: list[str] = []
    n_skipped = 0
    for action_id, action in labels.items():
        label = label_or_skip_reason(action, action_id, labels_path)
        if isinstance(label, SkipReason):
            n_skipped += 1
            continue
        action_class, offence_class = label
        support["action"][action_class] += 1
        support["offence"][offence_class] += 1
        pred = _prediction(predictions, action_id, pred_path)
        if pred is None:
            missing.append(action_id)
            continue
        if (pred["Offence"], pred["Severity"]) == _expected_strings(action):
            correct["offence"][offence_class] += 1
        if pred["Action class"] == action["Action class"]:
            correct["action"][action_class] += 1

    n_scored = int(support["action"].sum())
    if n_scored == 0:
        raise AnnotationError(f"{labels_path}: no action is scored under the official rules")
    with np.errstate(divide="ignore", invalid="ignore"):
        balanced = {task: float(np.mean(correct[task] / support[task])) for task in support}
    for task, counts in support.items():
        absent = [int(i) for i in np.flatnonzero(counts == 0)]
        if absent:
            warnings.warn(
                f"{labels_path}: {task} classes {absent} have no scored example, so balanced "
                "accuracy is NaN (as in the official evaluator)",
                stacklevel=2,
            )
    return {
        "accuracy_action": float(correct["action"].sum() / n_scored),
        "accuracy_offence_severity": float(correct["offence"].sum() / n_scored),
        "balanced_accuracy_action": balanced["action"],
        "balanced_accuracy_offence_severity": balanced["offence"],
        "leaderboard_value": 0.5 * balanced["offence"] + 0.5 * balanced["action"],
        "n_scored": n_scored,
        "n_skipped": n_skipped,
        "missing_predictions": missing,
        **{f"{task}_support": support[task].astype(int).tolist() for task in support},
        **{f"{task}_correct": correct[task].astype(int).tolist() for task in correct},
    }
