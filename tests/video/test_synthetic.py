from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from lightstack.video.data.synthetic import BACKGROUND, OFFENCE_COLOURS, synthesize
from lightstack.video.labels import ACTION_CLASSES, load_annotations

ACTION_FIELDS = {
    "UrlLocal",
    "Offence",
    "Contact",
    "Bodypart",
    "Upper body part",
    "Action class",
    "Severity",
    "Multiple fouls",
    "Try to play",
    "Touch ball",
    "Handball",
    "Handball offence",
    "Clips",
}
CLIP_FIELDS = {"Url", "Camera type", "Timestamp", "Replay speed"}


def decode(path: Path) -> tuple[np.ndarray, str, str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    return frames, codec, pix_fmt


def test_layout_and_annotation_fields(mvfoul_tree):
    root, summary = mvfoul_tree
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["test", "train", "valid"]
    assert (root / "synthetic.json").is_file()
    for split in ("train", "valid", "test"):
        data = json.loads((root / split / "annotations.json").read_text())
        assert data["Set"] == split
        assert (
            data["Number of actions"] == len(data["Actions"]) == summary["splits"][split]["actions"]
        )
        assert sorted(int(k) for k in data["Actions"]) == list(range(len(data["Actions"])))
        folders = sorted(p.name for p in (root / split).iterdir() if p.is_dir())
        assert folders == sorted(f"action_{k}" for k in data["Actions"])
        for action_id, action in data["Actions"].items():
            assert set(action) == ACTION_FIELDS
            assert 2 <= len(action["Clips"]) <= 3
            files = sorted(p.name for p in (root / split / f"action_{action_id}").iterdir())
            assert files == [f"clip_{k}.mp4" for k in range(len(action["Clips"]))]
            for k, clip in enumerate(action["Clips"]):
                assert set(clip) == CLIP_FIELDS
                assert clip["Url"] == f"Dataset/{split.capitalize()}/action_{action_id}/clip_{k}"
            assert action["Clips"][0]["Replay speed"] == 1.0


def test_clips_are_h264_with_the_right_frames_and_size(mvfoul_tree):
    root, summary = mvfoul_tree
    clips = sorted((root / "valid").glob("action_*/clip_*.mp4"))
    assert clips
    for clip in clips[:4]:
        frames, codec, pix_fmt = decode(clip)
        assert (codec, pix_fmt) == ("h264", "yuv420p")
        assert frames.shape == (summary["frames"], *summary["size"], 3)


def test_every_class_in_train_and_skipped_rows_follow_the_rules(mvfoul_tree):
    root, summary = mvfoul_tree
    train = summary["splits"]["train"]
    assert all(n > 0 for n in train["action_counts"])
    assert all(n > 0 for n in train["offence_counts"])
    skipped_reasons = set()
    for split, info in summary["splits"].items():
        loaded = load_annotations(root / split / "annotations.json")
        assert len(loaded) == info["scored"]
        assert sum(loaded.skipped_counts.values()) == info["skipped"] >= 1
        assert (
            np.bincount([r.action for r in loaded], minlength=8).tolist() == info["action_counts"]
        )
        assert (
            np.bincount([r.offence for r in loaded], minlength=4).tolist() == info["offence_counts"]
        )
        skipped_reasons |= set(loaded.skipped)
    assert len(skipped_reasons) >= 3


def test_class_frequencies_are_imbalanced(tmp_path):
    summary = synthesize(
        tmp_path,
        actions=120,
        views=(1, 1),
        frames=1,
        size=(16, 16),
        splits=("train",),
        fractions=(1,),
    )
    actions = summary["splits"]["train"]["action_counts"]
    offences = summary["splits"]["train"]["offence_counts"]
    assert max(actions) == actions[ACTION_CLASSES.index("Standing tackling")] > 3 * min(actions)
    assert offences[1] > 3 * offences[3]  # many "Offence + No card", few red cards
    assert offences[3] >= 1


def object_pixels(frame: np.ndarray) -> np.ndarray:
    """Mask of the coloured foul square: far from the pitch and brighter than the distractor."""
    diff = np.abs(frame.astype(float) - np.array(BACKGROUND)).sum(-1)
    return (diff > 120) & (frame.max(-1) > 120)


def test_offence_colour_and_action_motion_are_learnable(mvfoul_tree):
    root, _ = mvfoul_tree
    loaded = load_annotations(root / "train" / "annotations.json")
    palette = np.array(OFFENCE_COLOURS, dtype=float)
    hits = total = 0
    motions: dict[int, list[np.ndarray]] = {}
    for record in loaded:
        for clip in record.clips:
            frames, _, _ = decode(clip)
            mask = object_pixels(frames)
            colour = frames[mask].mean(0)
            nearest = int(np.argmin(np.abs(palette - colour).sum(-1)))
            hits += nearest == record.offence
            total += 1
            ys, xs = [], []
            for t in (0, len(frames) - 1):
                y, x = np.nonzero(mask[t])
                ys.append(y.mean())
                xs.append(x.mean())
            motions.setdefault(record.action, []).append(np.array([xs[1] - xs[0], ys[1] - ys[0]]))
    assert hits / total >= 0.95
    mean = {a: np.mean(v, axis=0) for a, v in motions.items()}
    right, left, up, still = (
        ACTION_CLASSES.index(n) for n in ("Tackling", "Standing tackling", "High leg", "Holding")
    )
    assert mean[right][0] > 8 and mean[left][0] < -8
    assert mean[up][1] < -8 and abs(mean[up][0]) < 3
    assert np.abs(mean[still]).max() < 2


def test_reproducible_from_seed(tmp_path):
    kwargs = dict(
        actions=10, views=(2, 2), frames=4, size=(16, 16), splits=("train",), fractions=(1.0,)
    )
    a = synthesize(tmp_path / "a", seed=3, **kwargs)
    b = synthesize(tmp_path / "b", seed=3, **kwargs)
    synthesize(tmp_path / "c", seed=4, **kwargs)
    assert a["splits"] == b["splits"]
    ann = {k: (tmp_path / k / "train" / "annotations.json").read_text() for k in "abc"}
    assert ann["a"] == ann["b"] != ann["c"]
    for clip in sorted((tmp_path / "a" / "train").glob("action_*/clip_*.mp4")):
        twin = tmp_path / "b" / clip.relative_to(tmp_path / "a")
        np.testing.assert_array_equal(decode(clip)[0], decode(twin)[0])


def test_progress_and_argument_errors(tmp_path):
    calls = []
    synthesize(
        tmp_path / "p",
        actions=9,
        views=(2, 2),
        frames=2,
        size=(16, 16),
        splits=("train",),
        fractions=(1.0,),
        skip_fraction=0.0,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(k, 9) for k in range(1, 10)]
    with pytest.raises(FileExistsError, match="overwrite"):
        synthesize(tmp_path / "p", actions=9, splits=("train",), fractions=(1.0,))
    with pytest.raises(ValueError, match="at least 8"):
        synthesize(tmp_path / "q", actions=6, frames=2, size=(16, 16))
    with pytest.raises(ValueError, match="even frame sizes"):
        synthesize(
            tmp_path / "r", actions=9, frames=2, size=(15, 16), splits=("train",), fractions=(1.0,)
        )
