"""Layout-true synthetic SoccerNet MVFoul data: real ``annotations.json`` fields, real H.264 clips.

Each action is one coloured square (the foul) moving over a pitch-green background beside a dark
distractor square. What a model can learn from it:

- the square's trajectory encodes the action class (``trajectory``: 8 distinct motions);
- its colour encodes the offence/severity class (``OFFENCE_COLOURS``);
- every view shows the same motion through its own camera: shifted, scaled, brightened, noisy.

Class frequencies are imbalanced like the real training set (many "Standing tackling" and
"Offence + No card", few "Dive" and red cards), every class appears in the training split, and
every split with enough actions carries rows the official rules skip ("Dont know", empty action,
empty offence, "Between", borderline severities). A Dive is only ever "No offence" or
"Offence"/"1.0": the official evaluator cannot score other Dive labels as correct (see
``lightstack.video.predict``), and synthetic data should let a perfect model reach 1.0.

Clips follow the real layout ``<split>/action_<id>/clip_<k>.mp4`` (``Url`` ``"Dataset/<Split>/
action_<id>/clip_<k>"``), encoded with libx264 (yuv420p) through PyAV. Real clips have 125 frames
at 25 fps with the foul at frame 75; synthetic clips have ``frames`` frames with the motion spread
over all of them, so read them with the window ``start=0, end=frames, fps=25``.
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np

from lightstack.core.io import atomic_path, atomic_write_json
from lightstack.video.labels import ACTION_CLASSES, OFFENCE_CLASSES, OFFENCE_OUTPUT

ACTION_WEIGHTS: tuple[float, ...] = (0.15, 0.42, 0.05, 0.12, 0.05, 0.06, 0.12, 0.03)
"""Sampling weights per action class, roughly the real training-set frequencies."""

OFFENCE_WEIGHTS: tuple[float, ...] = (0.14, 0.48, 0.34, 0.04)
"""Sampling weights per offence/severity class: few red cards, as in the real data."""

OFFENCE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (235, 235, 235),  # No offence: white
    (50, 90, 235),  # Offence + No card: blue
    (240, 215, 30),  # Offence + Yellow card: yellow
    (225, 30, 30),  # Offence + Red card: red
)
BACKGROUND: tuple[int, int, int] = (34, 110, 45)
DISTRACTOR: tuple[int, int, int] = (25, 25, 25)

CAMERA_TYPES: tuple[str, ...] = (
    "Main camera center",
    "Close-up player or field referee",
    "Main behind the goal",
)

# (Action class, Offence, Severity) of rows the official rules skip; None = any scored class.
SKIPPED_ROWS: tuple[tuple[str | None, str, str], ...] = (
    ("Dont know", "Offence", "1.0"),
    ("", "", ""),
    (None, "", ""),
    (None, "Between", ""),
    (None, "Offence", "2.0"),
    (None, "Offence", "4.0"),
    (None, "Offence", ""),
)

# One example per action class with a spread of offence classes (the Dive gets "no card").
_COVERAGE: tuple[tuple[int, int], ...] = (
    (0, 0),
    (1, 1),
    (2, 2),
    (3, 3),
    (4, 0),
    (5, 3),
    (6, 2),
    (7, 1),
)
_DIVE = ACTION_CLASSES.index("Dive")


def trajectory(action: int, t: np.ndarray) -> np.ndarray:
    """Position ``(len(t), 2)`` as (x, y) in [-0.6, 0.6] (y down) of action class ``action``.

    ``t`` runs over [0, 1] through the clip. Motions: 0 right, 1 left, 2 up, 3 still, 4 diagonal,
    5 horizontal shake, 6 vertical shake, 7 circle.
    """
    zero = np.zeros_like(t)
    wave = 0.5 * np.sin(4 * math.pi * t)
    x, y = {
        0: (-0.6 + 1.2 * t, zero),
        1: (0.6 - 1.2 * t, zero),
        2: (zero, 0.6 - 1.2 * t),
        3: (zero, zero),
        4: (-0.5 + t, -0.5 + t),
        5: (wave, zero),
        6: (zero, wave),
        7: (0.5 * np.cos(2 * math.pi * t), 0.5 * np.sin(2 * math.pi * t)),
    }[action]
    return np.stack([x, y], axis=-1)


def _square(frame: np.ndarray, cx: float, cy: float, side: int, colour: np.ndarray) -> None:
    h, w = frame.shape[:2]
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    frame[max(y0, 0) : max(min(y0 + side, h), 0), max(x0, 0) : max(min(x0 + side, w), 0)] = colour


def render_frames(
    action: int, offence: int, frames: int, size: tuple[int, int], rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """The ``frames`` uint8 ``(H, W, 3)`` frames of one view through a random camera, one by one.

    The camera is drawn from ``rng`` now, each frame's noise as it is produced: consume the
    frames before drawing from ``rng`` again. One frame at a time keeps real-size clips (125
    frames of 1280x720) in a few MB.
    """
    h, w = size
    shift = rng.uniform(-0.15, 0.15, size=2)
    scale = rng.uniform(0.75, 1.15)
    gain = rng.uniform(0.85, 1.15)
    t = np.linspace(0.0, 1.0, frames)
    path = (trajectory(action, t) * scale + shift) * np.array([w / 2, h / 2]) + [w / 2, h / 2]
    d_start, d_end = rng.uniform(-0.7, 0.7, size=(2, 2))
    d_path = (d_start + np.outer(t, d_end - d_start)) * np.array([w / 2, h / 2]) + [w / 2, h / 2]
    side = max(2, round(0.22 * min(h, w) * scale))

    def draw() -> Iterator[np.ndarray]:
        frame = np.empty((h, w, 3), dtype=np.float32)
        for i in range(frames):
            frame[:] = BACKGROUND
            _square(frame, *d_path[i], max(2, side // 2), np.array(DISTRACTOR))
            _square(frame, *path[i], side, np.array(OFFENCE_COLOURS[offence]))
            noisy = frame * gain + rng.normal(0.0, 6.0, size=frame.shape)
            yield np.clip(noisy, 0, 255).astype(np.uint8)

    return draw()


def write_mp4(
    path: str | Path,
    video: Iterable[np.ndarray],
    fps: int = 25,
    bitrate: int | None = None,
    keyframe_interval: int | None = None,
) -> None:
    """Encode uint8 RGB ``(H, W, 3)`` frames (an array ``(T, H, W, 3)`` or any iterable of
    frames) atomically as H.264 (libx264, yuv420p) mp4.

    One encoder thread and no B-frames keep the bytes reproducible and the frame count exact.
    Quality is constant (CRF 18) unless ``bitrate`` (bits/s) asks for an average bitrate: with
    CRF 18 the noisy synthetic frames cost about 20 Mbit/s at 1280x720, so decoding benchmarks
    pass a broadcast-like bitrate. x264 also picks the frame types unless ``keyframe_interval``
    (frames) is given: at 1280x720 the frame-to-frame noise makes it code every frame as an
    intra frame, each one a seek point. With ``keyframe_interval`` keyframes come exactly that
    far apart and every other frame is predicted (scene-cut detection off), as in a broadcast
    clip; x264's default interval, 250, gives a 5 s clip one keyframe, its first frame.
    """
    frames = iter(video)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    h, w, _ = first.shape
    if h % 2 or w % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {h}x{w}")
    options = {"preset": "veryfast", "bf": "0"}
    if bitrate is None:
        options["crf"] = "18"
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if bitrate is not None:
            stream.bit_rate = bitrate
        if keyframe_interval is not None:
            options["x264-params"] = f"scenecut=0:keyint={keyframe_interval}"
        stream.options = options
        stream.codec_context.thread_count = 1
        for array in itertools.chain([first], frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _split_sizes(actions: int, fractions: Sequence[float]) -> list[int]:
    raw = np.asarray(fractions, dtype=float) / sum(fractions) * actions
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: actions - sizes.sum()]:
        sizes[i] += 1
    return sizes.tolist()


class _Row(NamedTuple):
    action_class: str
    offence: str
    severity: str
    motion: int  # action class drawn in the video
    colour: int  # offence class drawn in the video
    scored: bool


def _weights(weights: Sequence[float]) -> np.ndarray:
    return np.asarray(weights, dtype=float) / sum(weights)


def _split_rows(
    n: int, train: bool, skip_fraction: float, skip_cursor: int, rng: np.random.Generator
) -> list[_Row]:
    """The labels of one split's ``n`` actions, in random order."""
    n_skip = max(1, round(skip_fraction * n)) if skip_fraction > 0 and n >= 4 else 0
    n_scored = n - n_skip
    if train and n_scored < len(_COVERAGE):
        raise ValueError(
            f"the training split has {n_scored} scored actions; at least {len(_COVERAGE)} are "
            "needed so that every class appears (raise `actions` or the train fraction)"
        )
    pairs = list(_COVERAGE) if n_scored >= len(_COVERAGE) else []
    while len(pairs) < n_scored:
        action = int(rng.choice(len(ACTION_CLASSES), p=_weights(ACTION_WEIGHTS)))
        offence = int(rng.choice(len(OFFENCE_CLASSES), p=_weights(OFFENCE_WEIGHTS)))
        pairs.append((action, min(offence, 1) if action == _DIVE else offence))
    rows = []
    for action, offence in pairs:
        offence_str, severity = OFFENCE_OUTPUT[offence]
        if offence == 0 and rng.random() < 0.2:
            severity = "1.0"  # the rules ignore a severity on "No offence"; some rows carry one
        rows.append(_Row(ACTION_CLASSES[action], offence_str, severity, action, offence, True))
    for k in range(n_skip):
        name, offence_str, severity = SKIPPED_ROWS[(skip_cursor + k) % len(SKIPPED_ROWS)]
        motion = int(rng.integers(_DIVE))  # a non-Dive motion, so every skip rule applies
        colour = int(rng.integers(len(OFFENCE_CLASSES)))
        name = ACTION_CLASSES[motion] if name is None else name
        rows.append(_Row(name, offence_str, severity, motion, colour, False))
    return [rows[i] for i in rng.permutation(len(rows))]


def _annotation(
    split: str, action_id: int, row: _Row, n_views: int, rng: np.random.Generator
) -> dict[str, Any]:
    action_class, offence, severity = row.action_class, row.offence, row.severity
    upper = action_class in ("Holding", "Pushing", "Elbowing")
    clips = []
    for k in range(n_views):
        clips.append(
            {
                "Url": f"Dataset/{split.capitalize()}/action_{action_id}/clip_{k}",
                "Camera type": CAMERA_TYPES[0] if k == 0 else str(rng.choice(CAMERA_TYPES[1:])),
                "Timestamp": int(rng.integers(100_000, 2_700_000)),
                "Replay speed": 1.0 if k == 0 else round(float(rng.uniform(1.0, 4.5)), 1),
            }
        )
    return {
        "UrlLocal": f"synthetic\\2024-2025\\game_{int(rng.integers(1000)):04d}",
        "Offence": offence,
        "Contact": "With contact" if offence == "Offence" else "Without contact",
        "Bodypart": "Upper body" if upper else "Under body",
        "Upper body part": "Use of arms" if upper else "",
        "Action class": action_class,
        "Severity": severity,
        "Multiple fouls": str(rng.choice(["No", "Yes", ""])),
        "Try to play": str(rng.choice(["Yes", "No", ""])),
        "Touch ball": str(rng.choice(["No", "Yes", ""])),
        "Handball": "No handball",
        "Handball offence": "",
        "Clips": clips,
    }


def synthesize(
    out: str | Path,
    actions: int,
    views: tuple[int, int] = (2, 4),
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    splits: Sequence[str] = ("train", "valid", "test"),
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    fps: int = 25,
    skip_fraction: float = 0.1,
    bitrate: int | None = None,
    keyframe_interval: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a synthetic MVFoul tree under ``out`` and return (and save) its summary.

    ``views`` is the inclusive range of views per action (real actions have 2 to 4).
    ``fractions`` share ``actions`` between ``splits``; ``skip_fraction`` of each split (at least
    one row once a split has 4 actions) gets labels the official rules skip. ``progress(done,
    total)`` is called after each action. The summary goes to ``out/synthetic.json``, beside the
    split folders. A split folder that exists is an error unless ``overwrite``.

    Real MVFoul clips are 125 frames (5 s) at 25 fps, 1280x720 in the high-resolution release
    and 398x224 in the 224p one: ``frames=125, size=(720, 1280)`` writes clips of that size.
    ``bitrate`` (bits/s) replaces constant quality by an average bitrate and
    ``keyframe_interval`` (frames) sets the distance between keyframes (see ``write_mp4``).
    """
    out = Path(out)
    if len(splits) != len(fractions) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"need one non-negative fraction per split, got {splits} / {fractions}")
    if not 1 <= views[0] <= views[1]:
        raise ValueError(f"views must be (min, max) with 1 <= min <= max, got {views}")
    if frames < 1 or min(size) < 2:
        raise ValueError(f"frames must be >= 1 and size >= 2x2, got {frames} and {size}")
    if bitrate is not None and bitrate < 1000:
        raise ValueError(f"bitrate is in bits/s and must be >= 1000, got {bitrate}")
    if keyframe_interval is not None and keyframe_interval < 1:
        raise ValueError(f"keyframe_interval must be >= 1 frame, got {keyframe_interval}")
    for split in splits:
        folder = out / split
        if folder.exists() and any(folder.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{folder} exists and is not empty (pass overwrite=True)")
            shutil.rmtree(folder)

    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {
        "generator": "lightstack.video.data.synthetic",
        "seed": seed,
        "frames": frames,
        "size": list(size),
        "fps": fps,
        "bitrate": bitrate,
        "keyframe_interval": keyframe_interval,
        "views": list(views),
        "window": {"start": 0, "end": frames, "fps": fps},
        "splits": {},
    }
    done, skip_cursor = 0, 0
    for split, n in zip(splits, _split_sizes(actions, fractions), strict=True):
        rows = _split_rows(n, split == splits[0], skip_fraction, skip_cursor, rng)
        skip_cursor += sum(not row.scored for row in rows)
        entries: dict[str, Any] = {}
        action_counts, offence_counts = [0] * len(ACTION_CLASSES), [0] * len(OFFENCE_CLASSES)
        n_clips = 0
        for action_id, row in enumerate(rows):
            n_views = int(rng.integers(views[0], views[1] + 1))
            entries[str(action_id)] = _annotation(split, action_id, row, n_views, rng)
            for k in range(n_views):
                video = render_frames(row.motion, row.colour, frames, size, rng)
                clip = out / split / f"action_{action_id}" / f"clip_{k}.mp4"
                write_mp4(clip, video, fps, bitrate, keyframe_interval)
            n_clips += n_views
            if row.scored:
                action_counts[row.motion] += 1
                offence_counts[row.colour] += 1
            done += 1
            if progress is not None:
                progress(done, actions)
        atomic_write_json(
            out / split / "annotations.json",
            {"Set": split, "Number of actions": len(entries), "Actions": entries},
        )
        summary["splits"][split] = {
            "actions": len(entries),
            "scored": sum(action_counts),
            "skipped": len(entries) - sum(action_counts),
            "clips": n_clips,
            "action_counts": action_counts,
            "offence_counts": offence_counts,
        }
    atomic_write_json(out / "synthetic.json", summary)
    return summary
