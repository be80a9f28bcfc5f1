"""Bad MVFoul input: ``annotations.json`` with missing fields or unknown class strings is one
``AnnotationError`` naming the file, the action and the field; unreadable, truncated or empty
clips are skipped with a warning naming the file, and too many of them is one ``ClipError``."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest

from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import ClipError, decode_clip, probe_clip
from lightstack.video.data.synthetic import synthesize
from lightstack.video.labels import AnnotationError, load_annotations

FRAMES, SIZE = 4, (16, 16)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mvfoul")
    synthesize(
        root, actions=8, views=(2, 2), frames=FRAMES, size=SIZE, splits=("train",), fractions=(1,),
        skip_fraction=0,
    )  # fmt: skip
    return root


@pytest.fixture
def split(tree: Path, tmp_path: Path) -> Path:
    """A private copy of the training split that a test may damage."""
    return Path(shutil.copytree(tree / "train", tmp_path / "train"))


def dataset(split_dir: Path, **kwargs: Any) -> MVFoulDataset:
    return MVFoulDataset(split_dir, frames=FRAMES, start=0, end=FRAMES, fps=25, size=SIZE, **kwargs)


def edit_annotations(split_dir: Path, edit) -> Path:
    path = split_dir / "annotations.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def first_action(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    action_id = next(iter(data["Actions"]))
    return action_id, data["Actions"][action_id]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a.pop("Offence"), "missing field 'Offence'"),
        (lambda a: a.pop("Action class"), "missing field 'Action class'"),
        (lambda a: a.update({"Action class": "Karate kick"}), "'Action class' has unknown value"),
        (lambda a: a.update({"Severity": "7.0"}), "'Severity' has unknown value '7.0'"),
        (lambda a: a.update({"Offence": 1}), "'Offence' has unknown value 1"),
        (lambda a: a.update({"Clips": []}), "field 'Clips' must be a non-empty list"),
        (lambda a: a.update({"Clips": ["clip_0"]}), "Clips[0] must be an object"),
    ],
)
def test_bad_action_names_file_action_and_field(split, edit, message):
    seen: dict[str, str] = {}

    def apply(data: dict[str, Any]) -> None:
        action_id, action = first_action(data)
        action.update({"Offence": "Offence", "Severity": "3.0", "Action class": "Tackling"})
        edit(action)
        seen["id"] = action_id

    path = edit_annotations(split, apply)
    with pytest.raises(AnnotationError) as info:
        load_annotations(path)
    text = str(info.value)
    assert text.startswith(f"{path}: action {seen['id']!r}") and message in text
    with pytest.raises(AnnotationError, match=r"annotations\.json"):
        dataset(split)  # the dataset raises the same error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object at top level"),
        ('{"Set": "train"}', "missing field 'Actions'"),
        ("", "not valid JSON"),
    ],
)
def test_bad_annotations_file_is_named(split, content, message):
    path = split / "annotations.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations(path)
    assert str(path) in str(info.value)


def clips(split_dir: Path) -> list[Path]:
    return sorted(split_dir.glob("action_*/clip_*.mp4"))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(b""), "cannot decode"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), "cannot decode"),
        (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 200), "cannot decode"),
        (lambda p: p.unlink(), "file not found"),
    ],
    ids=["zero-length", "truncated", "garbage", "missing"],
)
def test_unreadable_clip_is_skipped_with_a_warning_naming_it(split, damage, reason):
    bad = clips(split)[0]
    damage(bad)
    assert reason in (probe_clip(bad) or "")
    with pytest.warns(UserWarning, match=f"skipping clip {bad}: {reason}"):
        data = dataset(split, max_skip_fraction=0.5)
    assert data.skipped_clip_paths == [bad]
    assert all(bad not in item.clips for item in data.items)
    if bad.exists():
        with pytest.raises(ClipError, match=f"{bad}: (cannot decode|no frames)"):
            decode_clip(bad, [0, 1], SIZE)


def test_too_many_unreadable_clips_is_one_error(split):
    broken = clips(split)[:3]
    for path in broken:
        path.write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClipError) as info:
            dataset(split, max_skip_fraction=0.1)
    text = str(info.value)
    assert text.startswith(f"{split}: 3 of {len(clips(split))} clips")
    assert "more than max_skip_fraction=10.0%" in text and str(broken[0]) in text


def test_action_whose_views_are_all_unreadable_is_dropped(split):
    action_id, _ = first_action(json.loads((split / "annotations.json").read_text()))
    for path in (split / f"action_{action_id}").glob("clip_*.mp4"):
        path.write_bytes(b"")
    with pytest.warns(UserWarning, match="skipping clip"):
        data = dataset(split, max_skip_fraction=0.5)
    assert data.dropped_actions == [action_id]
