from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightstack.video.labels import (
    ACTION_CLASSES,
    OFFENCE_CLASSES,
    AnnotationError,
    SkipReason,
    label_or_skip_reason,
    load_annotations,
    parse_label,
)


def row(action: str, offence: str, severity: str) -> dict:
    return {"Action class": action, "Offence": offence, "Severity": severity}


def test_class_lists_follow_the_official_index_order():
    assert ACTION_CLASSES == (
        "Tackling",
        "Standing tackling",
        "High leg",
        "Holding",
        "Pushing",
        "Elbowing",
        "Challenge",
        "Dive",
    )
    assert OFFENCE_CLASSES[0] == "No offence"
    assert len(OFFENCE_CLASSES) == 4


@pytest.mark.parametrize(
    ("action", "offence", "severity", "reason"),
    [
        ("Dont know", "Offence", "1.0", SkipReason.DONT_KNOW),
        ("", "Offence", "1.0", SkipReason.EMPTY_ACTION),
        ("Tackling", "", "1.0", SkipReason.EMPTY_OFFENCE),
        ("Tackling", "Between", "3.0", SkipReason.BETWEEN),
        ("High leg", "Offence", "", SkipReason.EMPTY_SEVERITY),
        ("Holding", "Offence", "2.0", SkipReason.BORDERLINE_SEVERITY),
        ("Pushing", "Offence", "4.0", SkipReason.BORDERLINE_SEVERITY),
    ],
)
def test_each_skip_rule(action, offence, severity, reason):
    assert label_or_skip_reason(row(action, offence, severity), "3") is reason
    assert parse_label(row(action, offence, severity), "3") is None


@pytest.mark.parametrize(
    ("action", "offence", "severity", "label"),
    [
        ("Tackling", "Offence", "1.0", (0, 1)),
        ("High leg", "Offence", "3.0", (2, 2)),
        ("Elbowing", "Offence", "5.0", (5, 3)),
        # "No offence" is class 0 whatever the severity, and the capitalised spelling counts too
        ("Challenge", "No offence", "", (6, 0)),
        ("Challenge", "No offence", "5.0", (6, 0)),
        ("Challenge", "No offence", "2.0", (6, 0)),
        ("Pushing", "No Offence", "", (4, 0)),
        # a Dive's empty/"Between" offence is an offence and its ungraded severity "no card"
        ("Dive", "", "", (7, 1)),
        ("Dive", "Between", "3.0", (7, 2)),
        ("Dive", "Offence", "4.0", (7, 1)),
        ("Dive", "No offence", "", (7, 0)),
    ],
)
def test_scored_labels(action, offence, severity, label):
    assert parse_label(row(action, offence, severity), "3") == label


def write_annotations(path: Path, actions: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"Set": "train", "Number of actions": 1, "Actions": actions}))
    return path


@pytest.mark.parametrize(
    ("field", "value"),
    [("Action class", "Tacklin"), ("Offence", "Yes"), ("Severity", 3.0)],
)
def test_unknown_class_string_names_file_id_and_field(tmp_path, field, value):
    action = row("Tackling", "Offence", "1.0") | {field: value, "Clips": [{"Url": "x/clip_0"}]}
    path = write_annotations(tmp_path / "train" / "annotations.json", {"7": action})
    with pytest.raises(AnnotationError) as info:
        load_annotations(path)
    message = str(info.value)
    assert str(path) in message
    assert "'7'" in message
    assert repr(field) in message
    assert repr(value) in message


def test_missing_field_names_file_id_and_field(tmp_path):
    action = {"Action class": "Tackling", "Severity": "1.0", "Clips": []}
    path = write_annotations(tmp_path / "annotations.json", {"12": action})
    with pytest.raises(
        AnnotationError, match=r"annotations\.json: action '12': missing field 'Offence'"
    ):
        load_annotations(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"bad\.json: not valid JSON"):
        load_annotations(bad)
    bad.write_text(json.dumps({"Set": "train"}))
    with pytest.raises(AnnotationError, match="missing field 'Actions'"):
        load_annotations(bad)


def test_load_annotations_records_clips_and_skips(tmp_path):
    split = tmp_path / "valid"
    actions = {
        "0": row("Tackling", "Offence", "3.0")
        | {
            "Clips": [
                {"Url": "Dataset/Valid/action_0/clip_0", "Camera type": "Main camera center"},
                {"Url": "Dataset/Valid/action_0/clip_3", "Camera type": "Main behind the goal"},
                {"Camera type": "Close-up player or field referee"},
            ]
        },
        "1": row("Dont know", "Offence", "1.0") | {"Clips": []},
        "2": row("Holding", "Offence", "4.0") | {"Clips": []},
        "3": row("Holding", "Offence", "2.0"),
    }
    loaded = load_annotations(write_annotations(split / "annotations.json", actions))
    assert len(loaded) == 1
    record = loaded[0]
    assert (record.id, record.action, record.offence) == ("0", 0, 2)
    folder = split / "action_0"
    assert record.clips == (folder / "clip_0.mp4", folder / "clip_3.mp4", folder / "clip_2.mp4")
    assert record.camera_types[1] == "Main behind the goal"
    assert loaded.set_name == "train"
    assert loaded.skipped == {
        SkipReason.DONT_KNOW: ("1",),
        SkipReason.BORDERLINE_SEVERITY: ("2", "3"),
    }
    assert loaded.skipped_counts == {
        "action class 'Dont know'": 1,
        "borderline severity '2.0'/'4.0' on an offence": 2,
    }


def test_scored_action_without_clips_is_an_error(tmp_path):
    path = write_annotations(tmp_path / "annotations.json", {"5": row("Dive", "", "")})
    with pytest.raises(AnnotationError, match="action '5': field 'Clips' must be a non-empty list"):
        load_annotations(path)
