"""One MVFoul split folder as a dataset of multi-view clips.

Training reads ``views_per_sample`` random views per action (VARS: 2, so batches stack);
evaluation reads every view (up to ``max_views``) and ``collate_views`` pads a batch to its
largest view count, returning a ``view_mask``.

Clips that are missing or cannot be decoded are found when the dataset is built (each clip is
opened and its first frame decoded), skipped with a warning naming the file, and counted in
``skipped_clips``; an action left with no view is dropped. More than ``max_skip_fraction`` of the
clips skipped is an error. A split folder of a ``video prepare`` cache reads the same clips from
their decoded copies (``lightstack.video.data.cache``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lightstack.video.data.cache import open_clips
from lightstack.video.data.decode import SOURCE_FPS, ClipError, RawClips, window_indices
from lightstack.video.labels import (
    ACTION_CLASSES,
    OFFENCE_CLASSES,
    ActionRecord,
    load_annotations,
)

_ACTION_DIR = re.compile(r"action_(\d+)")
_CLIP_FILE = re.compile(r"clip_(\d+)")


def _unlabelled_items(split_dir: Path, suffix: str) -> list[ActionRecord]:
    """Actions of a split without ``annotations.json`` (e.g. the challenge set), labels -1.

    Clips are the ``clip_<k><suffix>`` files of each ``action_<id>`` folder, named
    ``clip_<k>.mp4`` (a cache stores ``clip_<k>.json`` records for them).
    """
    items = []
    for folder in split_dir.iterdir():
        match = _ACTION_DIR.fullmatch(folder.name)
        if not folder.is_dir() or match is None:
            continue
        numbered = sorted(
            (int(found.group(1)), p.with_suffix(".mp4"))
            for p in folder.glob(f"clip_*{suffix}")
            if (found := _CLIP_FILE.fullmatch(p.stem))
        )
        clips = tuple(p for _, p in numbered)
        views = tuple(k for k, _ in numbered)
        items.append(ActionRecord(match.group(1), -1, -1, clips, views=views))
    return sorted(items, key=lambda item: int(item.id))


class MVFoulDataset(Dataset):
    """The actions of one MVFoul split folder (``<root>/<split>``) as multi-view clips.

    Items are dicts: ``video`` ``(V, 3, T, H, W)`` float in [0, 1], ``action`` and ``offence``
    (long; -1 in a split without annotations), ``id`` (the ``Actions`` key), ``n_views`` and
    ``view_ids`` ``(V,)`` long, the camera position of each view (``ActionRecord.views``: a
    missing ``clip_0`` leaves ``clip_1`` at position 1).
    ``views_per_sample`` views are drawn at random per item (``None``: all views, up to
    ``max_views``). With ``seed`` the draw depends only on (seed, index), the same every epoch;
    without it the draw uses torch's RNG, which DataLoader seeds per worker. ``decode_threads``
    as ``threads`` of ``decode_clip``.

    ``root`` may be a split folder of the raw tree or of a cache made by ``video prepare``
    (``lightstack.video.data.cache``): both give the same items.
    """

    def __init__(
        self,
        root: str | Path,
        frames: int = 16,
        start: int = 63,
        end: int = 87,
        fps: float = 17.0,
        size: tuple[int, int] = (224, 224),
        views_per_sample: int | None = None,
        max_views: int = 4,
        seed: int | None = None,
        max_skip_fraction: float = 0.1,
        probe: bool = True,
        decode_threads: int = 1,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: MVFoul split folder not found")
        if frames < 1 or not 0 <= start < end or not 0 < fps <= SOURCE_FPS:
            raise ValueError(
                f"need frames >= 1, 0 <= start < end and 0 < fps <= {SOURCE_FPS:g}; "
                f"got frames={frames} start={start} end={end} fps={fps}"
            )
        if decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0 (0: one per core), got {decode_threads}")
        if views_per_sample is not None and not 1 <= views_per_sample <= max_views:
            raise ValueError(
                f"views_per_sample must be in 1..max_views={max_views}, got {views_per_sample}"
            )
        self.indices = window_indices(frames, start, end, fps)
        self.size = (int(size[0]), int(size[1]))
        self.views_per_sample = views_per_sample
        self.max_views = max_views
        self.seed = seed
        self.decode_threads = decode_threads
        raw = RawClips(tuple(self.indices), self.size, decode_threads, probe)
        self.clips = open_clips(self.root, raw)

        annotations = self.root / "annotations.json"
        if annotations.exists():
            loaded = load_annotations(annotations)
            self.skipped_actions = loaded.skipped_counts
            candidates = list(loaded)
        else:
            self.skipped_actions = {}
            candidates = _unlabelled_items(self.root, self.clips.stored_suffix)
        self.items, self.skipped_clip_paths, self.dropped_actions = self._check_clips(candidates)
        self.total_clips = sum(len(item.clips) for item in candidates)
        self._check_skips(max_skip_fraction)
        if not self.items:
            raise ClipError(f"{self.root}: no action with a readable clip")

    @property
    def skipped_clips(self) -> int:
        return len(self.skipped_clip_paths)

    def _check_clips(
        self, candidates: list[ActionRecord]
    ) -> tuple[list[ActionRecord], list[Path], list[str]]:
        items, bad, dropped = [], [], []
        for item in candidates:
            good, views, cameras = [], [], []
            for k, (clip, view) in enumerate(zip(item.clips, item.positions, strict=True)):
                reason = self.clips.probe(clip)
                if reason is None:
                    good.append(clip)
                    views.append(view)
                    cameras.extend(item.camera_types[k : k + 1])
                else:
                    warnings.warn(f"skipping clip {clip}: {reason}", stacklevel=2)
                    bad.append(clip)
            if good:
                kept = {"clips": tuple(good), "views": tuple(views), "camera_types": tuple(cameras)}
                items.append(replace(item, **kept))
            else:
                dropped.append(item.id)
        return items, bad, dropped

    def _check_skips(self, max_skip_fraction: float) -> None:
        if not self.skipped_clip_paths:
            return
        fraction = self.skipped_clips / self.total_clips
        if fraction > max_skip_fraction:
            first = ", ".join(str(p) for p in self.skipped_clip_paths[:5])
            raise ClipError(
                f"{self.root}: {self.skipped_clips} of {self.total_clips} clips ({fraction:.1%}) "
                f"are missing or unreadable, more than max_skip_fraction={max_skip_fraction:.1%}; "
                f"first: {first}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def _view_order(self, index: int, n: int) -> list[int]:
        if self.views_per_sample is None:
            return list(range(n))
        if self.seed is None:
            return torch.randperm(n).tolist()
        return np.random.default_rng((self.seed, index)).permutation(n).tolist()

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        wanted = min(self.views_per_sample or self.max_views, self.max_views, len(item.clips))
        views, positions, errors = [], [], []
        for k in self._view_order(index, len(item.clips)):
            if len(views) == wanted:
                break
            try:
                views.append(self.clips.read(item.clips[k]))
                positions.append(item.positions[k])
            except ClipError as exc:
                warnings.warn(f"skipping view: {exc}", stacklevel=2)
                errors.append(str(exc))
        if not views:
            raise ClipError(f"action {item.id!r}: no view could be decoded: {'; '.join(errors)}")
        return {
            "video": torch.stack(views),
            "action": torch.tensor(item.action, dtype=torch.long),
            "offence": torch.tensor(item.offence, dtype=torch.long),
            "id": item.id,
            "n_views": len(views),
            "view_ids": torch.tensor(positions, dtype=torch.long),
        }

    def targets(self, task: Literal["action", "offence"]) -> torch.Tensor:
        """The label of every item for ``task`` (-1 where unlabelled)."""
        return torch.tensor([getattr(item, task) for item in self.items], dtype=torch.long)

    def class_counts(self) -> dict[str, torch.Tensor]:
        """Labelled items per class: ``{"action": (8,), "offence": (4,)}`` (for class weights)."""
        sizes = {"action": len(ACTION_CLASSES), "offence": len(OFFENCE_CLASSES)}
        counts = {}
        for task, n in sizes.items():
            labels = self.targets(task)  # type: ignore[arg-type]
            counts[task] = torch.bincount(labels[labels >= 0], minlength=n)
        return counts
