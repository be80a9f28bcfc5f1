from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lightstack.video.labels import AnnotationError, load_annotations
from lightstack.video.predict import evaluate, prediction_entry, write_predictions


def official_evaluate(labels: dict, predictions: dict) -> dict:
    """An independent transcription of SoccerNet's ``MV_FoulRecognition.evaluate`` (percent)."""
    actions_index = {
        "Tackling": 0,
        "Standing tackling": 1,
        "High leg": 2,
        "Holding": 3,
        "Pushing": 4,
        "Elbowing": 5,
        "Challenge": 6,
        "Dive": 7,
    }
    gt_action, pred_action = np.zeros(8), np.zeros(8)
    gt_offence, pred_offence = np.zeros(4), np.zeros(4)
    for key, action in labels["Actions"].items():
        cls, off, sev = action["Action class"], action["Offence"], action["Severity"]
        if cls in ("", "Dont know"):
            continue
        if off in ("", "Between") and cls != "Dive":
            continue
        if sev in ("", "2.0", "4.0") and cls != "Dive" and off not in ("No offence", "No Offence"):
            continue
        if off in ("", "Between"):
            off = "Offence"
        if sev in ("", "2.0", "4.0"):
            sev = "1.0"
        if off == "No Offence":
            off = "No offence"
        if off == "No offence":
            target = 0
        elif off == "Offence":
            target = {"1.0": 1, "3.0": 2, "5.0": 3}.get(sev)
            if target is None:
                continue
        else:
            continue
        if cls == "Dive":
            sev = "1.0"
        if off == "No offence":
            sev = ""
        gt_action[actions_index[cls]] += 1
        gt_offence[target] += 1
        if key in predictions["Actions"]:
            pred = predictions["Actions"][key]
            if action["Offence"] == pred["Offence"] and sev == pred["Severity"]:
                pred_offence[target] += 1
            if action["Action class"] == pred["Action class"]:
                pred_action[actions_index[cls]] += 1
    bal_offence = np.mean(pred_offence / gt_offence)
    bal_action = np.mean(pred_action / gt_action)
    return {
        "accuracy_offence_severity": pred_offence.sum() / gt_offence.sum() * 100,
        "accuracy_action": pred_action.sum() / gt_action.sum() * 100,
        "balanced_accuracy_offence_severity": bal_offence * 100,
        "balanced_accuracy_action": bal_action * 100,
        "leaderboard_value": (bal_offence * 0.5 + bal_action * 0.5) * 100,
    }


def label(action: str, offence: str, severity: str) -> dict:
    return {"Action class": action, "Offence": offence, "Severity": severity, "Clips": []}


CRAFTED_LABELS = {
    "0": label("Tackling", "Offence", "1.0"),  # action 0, offence 1
    "1": label("Standing tackling", "No offence", ""),  # 1, 0
    "2": label("High leg", "Offence", "5.0"),  # 2, 3
    "3": label("Dive", "", ""),  # 7, 1: only a prediction with Offence "" could match
    "4": label("Holding", "Offence", "3.0"),  # 3, 2
    "5": label("Dont know", "Offence", "1.0"),  # skipped
    "6": label("Pushing", "Between", ""),  # skipped
    "7": label("Tackling", "Offence", "2.0"),  # skipped
    "8": label("Challenge", "No Offence", ""),  # 6, 0: only "No Offence" could match
    "9": label("Tackling", "Offence", "3.0"),  # 0, 2: not predicted
    "10": label("Pushing", "Offence", "1.0"),  # 4, 1
    "11": label("Elbowing", "Offence", "5.0"),  # 5, 3
    "12": label("Dive", "Offence", "3.0"),  # 7, 2: matched by a Dive predicted with "1.0"
}
CRAFTED_PREDICTIONS = {
    "0": (0, 1),  # both right
    "1": (1, 0),  # both right
    "2": (2, 2),  # action right, yellow instead of red
    "3": (7, 1),  # action right, offence written "Offence" != ""
    "4": (4, 2),  # Pushing instead of Holding, offence right
    "5": (0, 0),  # a skipped action: ignored
    "8": (6, 0),  # action right, "No offence" != "No Offence"
    "10": (4, 1),  # both right
    "11": (5, 3),  # both right
    "12": (7, 1),  # action right, "Offence"/"1.0" is what a Dive must carry: right
}


def write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_prediction_entries_use_the_official_strings():
    assert prediction_entry(0, 0) == {
        "Action class": "Tackling",
        "Offence": "No offence",
        "Severity": "",
    }
    assert prediction_entry(7, 1) == {
        "Action class": "Dive",
        "Offence": "Offence",
        "Severity": "1.0",
    }
    assert prediction_entry(1, 2)["Severity"] == "3.0"
    assert prediction_entry(1, 3)["Severity"] == "5.0"
    with pytest.raises(ValueError, match="offence class index 4"):
        prediction_entry(0, 4)
    with pytest.raises(ValueError, match="action class index 8"):
        prediction_entry(8, 0)


def test_write_predictions_format(tmp_path):
    path = tmp_path / "out" / "predictions.json"
    write_predictions(path, {"3": (2, 3), "10": (6, 0)}, set_name="test")
    assert json.loads(path.read_text()) == {
        "Set": "test",
        "Actions": {
            "3": {"Action class": "High leg", "Offence": "Offence", "Severity": "5.0"},
            "10": {"Action class": "Challenge", "Offence": "No offence", "Severity": ""},
        },
    }
    assert [p.name for p in path.parent.iterdir()] == ["predictions.json"]  # no temp file left
    with pytest.raises(ValueError, match="prediction for action 'x'"):
        write_predictions(tmp_path / "bad.json", {"x": (9, 0)})


def test_perfect_predictions_score_one(mvfoul_tree, tmp_path):
    root, _ = mvfoul_tree
    labels_path = root / "train" / "annotations.json"
    preds = {r.id: (r.action, r.offence) for r in load_annotations(labels_path)}
    write_predictions(tmp_path / "p.json", preds)
    result = evaluate(tmp_path / "p.json", labels_path)
    for key in (
        "accuracy_action",
        "accuracy_offence_severity",
        "balanced_accuracy_action",
        "balanced_accuracy_offence_severity",
        "leaderboard_value",
    ):
        assert result[key] == 1.0, key
    assert result["n_scored"] == len(preds) and result["missing_predictions"] == []


def test_crafted_case_matches_hand_computation_and_official_logic(tmp_path):
    labels_path = write_json(tmp_path / "annotations.json", {"Actions": CRAFTED_LABELS})
    write_predictions(tmp_path / "p.json", CRAFTED_PREDICTIONS)
    result = evaluate(tmp_path / "p.json", labels_path)
    # 10 scored actions (0-4, 8-12); 3 skipped.
    # action support [2,1,1,1,1,1,1,2], correct [1,1,1,0,1,1,1,2] (9 missing, 4 wrong): 8/10;
    # balanced = (1/2 + 1 + 1 + 0 + 1 + 1 + 1 + 1) / 8 = 6.5 / 8.
    # offence support [2,3,3,2] (0: 1,8; 1: 0,3,10; 2: 4,9,12; 3: 2,11),
    # correct [1,2,2,1] (1; 0,10; 4,12; 11): 6/10; balanced = (1/2 + 2/3 + 2/3 + 1/2) / 4 = 7/12.
    assert result["n_scored"] == 10 and result["n_skipped"] == 3
    assert result["missing_predictions"] == ["9"]
    assert result["action_support"] == [2, 1, 1, 1, 1, 1, 1, 2]
    assert result["action_correct"] == [1, 1, 1, 0, 1, 1, 1, 2]
    assert result["offence_support"] == [2, 3, 3, 2]
    assert result["offence_correct"] == [1, 2, 2, 1]
    assert result["accuracy_action"] == pytest.approx(0.8)
    assert result["accuracy_offence_severity"] == pytest.approx(0.6)
    assert result["balanced_accuracy_action"] == pytest.approx(6.5 / 8)
    assert result["balanced_accuracy_offence_severity"] == pytest.approx(7 / 12)
    assert result["leaderboard_value"] == pytest.approx((6.5 / 8 + 7 / 12) / 2)  # 67/96

    predictions = json.loads((tmp_path / "p.json").read_text())
    official = official_evaluate({"Actions": CRAFTED_LABELS}, predictions)
    for key, percent in official.items():
        assert result[key] * 100 == pytest.approx(percent), key


def test_absent_class_gives_nan_like_the_official_evaluator(tmp_path):
    labels_path = write_json(
        tmp_path / "a.json", {"Actions": {"0": label("Tackling", "Offence", "1.0")}}
    )
    write_predictions(tmp_path / "p.json", {"0": (0, 1)})
    with pytest.warns(UserWarning, match="no scored example"):
        result = evaluate(tmp_path / "p.json", labels_path)
    assert result["accuracy_action"] == 1.0
    assert math.isnan(result["balanced_accuracy_action"])
    assert math.isnan(result["leaderboard_value"])


def test_bad_files_are_clear_errors(tmp_path):
    labels_path = write_json(tmp_path / "a.json", {"Actions": CRAFTED_LABELS})
    preds = write_json(tmp_path / "p.json", {"Set": "test"})
    with pytest.raises(AnnotationError, match=r"p\.json: missing field 'Actions'"):
        evaluate(preds, labels_path)
    write_json(preds, {"Actions": {"0": {"Action class": "Tackling", "Offence": "Offence"}}})
    with pytest.raises(AnnotationError, match=r"p\.json: action '0': missing field 'Severity'"):
        evaluate(preds, labels_path)
    only_skipped = write_json(tmp_path / "s.json", {"Actions": {"5": CRAFTED_LABELS["5"]}})
    with pytest.raises(AnnotationError, match="no action is scored"):
        evaluate(preds, only_skipped)
