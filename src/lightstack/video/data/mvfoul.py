"""SoccerNet MVFoul multi-view clips: dataset, view-padding collate and LightningDataModule.

The frame window follows the VARS baseline. Real clips are 125 frames at 25 fps with the foul at
frame 75; VARS keeps frames ``start..end-1`` and from those the ``j``-th where
``j % (25 / fps) < 1``, and its best models read ``start=63, end=87, fps=17``: 16 frames around
the foul (our defaults). When that rule gives a count other than ``frames``, the kept frames are
resampled evenly to ``frames``. A clip shorter than the window repeats its last frame; synthetic
clips are short, so read them with ``start=0, end=<clip length>, fps=25``.

Training reads ``views_per_sample`` random views per action (VARS: 2, so batches stack);
evaluation reads every view (up to ``max_views``) and ``collate_views`` pads a batch to its
largest view count, returning a ``view_mask``.

Clips that are missing or cannot be decoded are found when the dataset is built (each clip is
opened and its first frame decoded), skipped with a warning naming the file, and counted in
``skipped_clips``; an action left with no view is dropped. More than ``max_skip_fraction`` of the
clips skipped is an error. Every read opens its own container, so datasets are safe to use from
DataLoader worker processes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch
from pydantic import Field, model_validator
from torch.utils.data import DataLoader, Dataset

from lightstack.core.config import DataLoaderConfig
from lightstack.core.resume import ResumableDataModule
from lightstack.video.labels import (
    ACTION_CLASSES,
    OFFENCE_CLASSES,
    ActionRecord,
    load_annotations,
)

SOURCE_FPS = 25.0
"""Frame rate of the real MVFoul clips, the time base of ``start``/``end``/``fps``."""

# PyAV 17+ scales with one thread per core by default: with a DataLoader worker per core that
# oversubscribes the CPU and was slower than one thread each (earlier versions use one thread).
_ONE_SCALER_THREAD: dict[str, int] = (
    {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
)

_ACTION_DIR = re.compile(r"action_(\d+)")
_CLIP_FILE = re.compile(r"clip_(\d+)\.mp4")


class ClipError(ValueError):
    """A clip that cannot be read, or a data set with too many of them."""


def vars_frame_indices(start: int, end: int, fps: float) -> list[int]:
    """Frame indices the VARS baseline reads for a ``start..end`` window subsampled to ``fps``."""
    factor = (end - start) / (((end - start) / SOURCE_FPS) * fps)
    return [start + j for j in range(end - start) if j % factor < 1]


def window_indices(frames: int, start: int, end: int, fps: float) -> list[int]:
    """``frames`` indices: the VARS selection, resampled evenly when its length differs."""
    base = vars_frame_indices(start, end, fps)
    if len(base) == frames:
        return base
    pick = np.linspace(0, len(base) - 1, frames).round().astype(int)
    return [base[i] for i in pick]


class _SeekFailed(Exception):
    """Seeking gave no frame index that can be trusted."""


def _indexed_frames(
    container: av.container.InputContainer, first: int, seek: bool
) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(index, frame)`` of the first video stream, from the last keyframe at or before frame
    ``first`` with ``seek``, else from the start.

    A clip is only decoded from a keyframe on, so without a keyframe inside the lead-in to the
    window (x264 puts one every 250 frames unless the picture cuts) seeking changes nothing.
    Indices after a seek come from the first frame's timestamp (constant frame rate); when the
    seek fails, the stream has no usable timestamps or the seek lands past ``first``, this
    raises ``_SeekFailed`` and the caller decodes from the start.
    """
    stream = container.streams.video[0]
    frames = container.decode(stream)
    rate, base, start = stream.average_rate, stream.time_base, stream.start_time
    if not seek or first == 0 or not rate or not base or start is None:
        yield from enumerate(frames)
        return
    try:
        container.seek(start + int(first / (rate * base)), stream=stream, backward=True)
    except av.error.FFmpegError as exc:
        raise _SeekFailed from exc
    frame = next(frames, None)
    if frame is None or frame.pts is None:
        raise _SeekFailed
    index = round((frame.pts - start) * base * rate)
    if not 0 <= index <= first:
        raise _SeekFailed
    yield index, frame
    yield from enumerate(frames, start=index + 1)


def _decode_window(
    path: str | Path, indices: Sequence[int], size: tuple[int, int], threads: int, seek: bool
) -> torch.Tensor:
    wanted = set(indices)
    first, last_needed = min(indices), max(indices)
    height, width = size
    arrays: dict[int, np.ndarray] = {}
    index, last = -1, None
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ClipError(f"{path}: no video stream")
        codec = container.streams.video[0].codec_context
        codec.thread_count = threads
        if threads != 1:
            codec.thread_type = "AUTO"  # frame and slice threads
        for index, frame in _indexed_frames(container, first, seek):
            last = frame
            if index in wanted:
                arrays[index] = _to_rgb(frame, width, height)
            if index >= last_needed:
                break
    if last is None:
        raise ClipError(f"{path}: no frames")
    if index not in arrays:  # the clip ended before the window did
        arrays[index] = _to_rgb(last, width, height)
    video = torch.from_numpy(np.stack([arrays[min(i, index)] for i in indices]))
    return video.permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, H, W)


def _to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` uint8: FFmpeg's scaler converts to RGB and resizes in one pass (its
    bilinear filter widens when it shrinks, so downscaling is antialiased)."""
    out = frame.reformat(width, height, "rgb24", interpolation="BILINEAR", **_ONE_SCALER_THREAD)
    return out.to_ndarray()


def decode_clip(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int],
    threads: int = 1,
    seek: bool = True,
) -> torch.Tensor:
    """Decode frames ``indices`` of one clip as ``(3, T, H, W)`` float in [0, 1] at ``size``.

    Decodes from the last keyframe at or before the first needed frame (``seek``; otherwise
    from the start) up to the last needed frame only, and resizes each needed frame while
    converting it to RGB. ``threads`` decoder threads (0: FFmpeg picks, one per core); one
    thread per DataLoader worker uses the cores best when there are as many workers as
    cores. An index past the clip's end reads its last frame. Raises ``ClipError`` naming the
    file if it cannot be read.
    """
    try:
        try:
            return _decode_window(path, indices, size, threads, seek)
        except _SeekFailed:
            return _decode_window(path, indices, size, threads, seek=False)
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipError(f"{path}: cannot decode ({exc})") from exc


def probe_clip(path: Path) -> str | None:
    """Why ``path`` cannot be used (missing, unreadable, no frames), or ``None`` if it can."""
    if not path.is_file():
        return "file not found"
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            next(container.decode(video=0))
    except StopIteration:
        return "no frames"
    except (av.error.FFmpegError, OSError) as exc:
        return f"cannot decode ({exc})"
    return None


def _unlabelled_items(split_dir: Path) -> list[ActionRecord]:
    """Actions of a split without ``annotations.json`` (e.g. the challenge set), labels -1."""
    items = []
    for folder in split_dir.iterdir():
        match = _ACTION_DIR.fullmatch(folder.name)
        if not folder.is_dir() or match is None:
            continue
        clips = sorted(
            (p for p in folder.glob("clip_*.mp4") if _CLIP_FILE.fullmatch(p.name)),
            key=lambda p: int(p.stem.removeprefix("clip_")),
        )
        items.append(ActionRecord(match.group(1), -1, -1, tuple(clips)))
    return sorted(items, key=lambda item: int(item.id))


class MVFoulDataset(Dataset):
    """The actions of one MVFoul split folder (``<root>/<split>``) as multi-view clips.

    Items are dicts: ``video`` ``(V, 3, T, H, W)`` float in [0, 1], ``action`` and ``offence``
    (long; -1 in a split without annotations), ``id`` (the ``Actions`` key) and ``n_views``.
    ``views_per_sample`` views are drawn at random per item (``None``: all views, up to
    ``max_views``). With ``seed`` the draw depends only on (seed, index), the same every epoch;
    without it the draw uses torch's RNG, which DataLoader seeds per worker. ``decode_threads``
    as ``threads`` of ``decode_clip``.
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

        annotations = self.root / "annotations.json"
        if annotations.exists():
            loaded = load_annotations(annotations)
            self.skipped_actions = loaded.skipped_counts
            candidates = list(loaded)
        else:
            self.skipped_actions = {}
            candidates = _unlabelled_items(self.root)
        self.items, self.skipped_clip_paths, self.dropped_actions = self._check_clips(
            candidates, probe
        )
        self.total_clips = sum(len(item.clips) for item in candidates)
        self._check_skips(max_skip_fraction)
        if not self.items:
            raise ClipError(f"{self.root}: no action with a readable clip")

    @property
    def skipped_clips(self) -> int:
        return len(self.skipped_clip_paths)

    @staticmethod
    def _check_clips(
        candidates: list[ActionRecord], probe: bool
    ) -> tuple[list[ActionRecord], list[Path], list[str]]:
        items, bad, dropped = [], [], []
        for item in candidates:
            good = []
            for clip in item.clips:
                reason = probe_clip(clip) if probe else (None if clip.is_file() else "missing")
                if reason is None:
                    good.append(clip)
                else:
                    warnings.warn(f"skipping clip {clip}: {reason}", stacklevel=2)
                    bad.append(clip)
            if good:
                items.append(replace(item, clips=tuple(good)))
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
        views, errors = [], []
        for k in self._view_order(index, len(item.clips)):
            if len(views) == wanted:
                break
            try:
                clip = decode_clip(item.clips[k], self.indices, self.size, self.decode_threads)
                views.append(clip)
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


def collate_views(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items whose view counts differ: zero-pad to the batch's most views.

    Returns ``video`` ``(B, V, 3, T, H, W)``, ``view_mask`` ``(B, V)`` bool (True = real view),
    ``action``/``offence``/``n_views`` ``(B,)`` long and ``id`` (list of str).
    """
    n_views = [item["video"].shape[0] for item in batch]
    first = batch[0]["video"]
    video = first.new_zeros((len(batch), max(n_views), *first.shape[1:]))
    mask = torch.zeros(len(batch), max(n_views), dtype=torch.bool)
    for b, item in enumerate(batch):
        video[b, : n_views[b]] = item["video"]
        mask[b, : n_views[b]] = True
    return {
        "video": video,
        "view_mask": mask,
        "action": torch.stack([item["action"] for item in batch]),
        "offence": torch.stack([item["offence"] for item in batch]),
        "n_views": torch.tensor(n_views, dtype=torch.long),
        "id": [item["id"] for item in batch],
    }


class VideoDataConfig(DataLoaderConfig):
    """The ``data`` section of a video run: where the MVFoul tree is and how clips are read.

    ``start``/``end``/``fps`` are in the 25 fps time base of real clips (defaults: VARS's 16
    frames around the foul); for synthetic clips use ``start: 0``, ``end: <frames>``, ``fps: 25``.
    ``decode_threads`` is per DataLoader worker: keep 1 when ``num_workers`` is about the number
    of cores, raise it (or 0: FFmpeg's choice) when fewer workers should use more cores.
    """

    root: Path = Path("data/mvfoul")
    train_split: str = "train"
    val_split: str = "valid"
    test_split: str = "test"
    frames: int = Field(16, ge=1)
    start: int = Field(63, ge=0)
    end: int = Field(87, ge=1)
    fps: float = Field(17.0, gt=0, le=SOURCE_FPS)
    size: tuple[int, int] = (224, 224)
    views_per_sample_train: int | None = Field(2, ge=1)
    max_views: int = Field(4, ge=1)
    batch_size: int = Field(4, ge=1)
    balanced_sampler: bool = False
    max_skip_fraction: float = Field(0.1, ge=0, le=1)
    probe_clips: bool = True
    decode_threads: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> VideoDataConfig:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.views_per_sample_train is not None and self.views_per_sample_train > self.max_views:
            raise ValueError(
                f"views_per_sample_train ({self.views_per_sample_train}) exceeds "
                f"max_views ({self.max_views})"
            )
        return self


class MVFoulDataModule(ResumableDataModule):
    """Train/valid/test MVFoul datasets and loaders built from a ``VideoDataConfig``.

    Training draws ``views_per_sample_train`` random views per action, shuffles, and with
    ``balanced_sampler`` samples actions with replacement at inverse offence/severity class
    frequency. Evaluation reads all views; ``predict`` uses the test split.
    """

    def __init__(self, cfg: VideoDataConfig):
        super().__init__()
        self.cfg = cfg
        # Batch size of the loaders; the batch-size tuner and OOM recovery change it.
        self.batch_size = cfg.batch_size
        self.datasets: dict[str, MVFoulDataset] = {}

    def dataset(self, role: Literal["train", "val", "test"]) -> MVFoulDataset:
        """The dataset of one role, built on first use."""
        if role not in self.datasets:
            cfg = self.cfg
            split = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}[role]
            self.datasets[role] = MVFoulDataset(
                cfg.root / split,
                frames=cfg.frames,
                start=cfg.start,
                end=cfg.end,
                fps=cfg.fps,
                size=cfg.size,
                views_per_sample=cfg.views_per_sample_train if role == "train" else None,
                max_views=cfg.max_views,
                max_skip_fraction=cfg.max_skip_fraction,
                probe=cfg.probe_clips,
                decode_threads=cfg.decode_threads,
            )
        return self.datasets[role]

    def setup(self, stage: str) -> None:
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for role in roles.get(stage, ("test",)):
            self.dataset(role)  # type: ignore[arg-type]

    def class_counts(self) -> dict[str, torch.Tensor]:
        """Training-set items per class (for class-weighted losses)."""
        return self.dataset("train").class_counts()

    def _loader_options(self) -> dict[str, Any]:
        cfg = self.cfg
        workers = cfg.num_workers
        return {
            "num_workers": workers,
            "pin_memory": cfg.pin_memory,
            "persistent_workers": cfg.persistent_workers and workers > 0,
            "prefetch_factor": cfg.prefetch_factor if workers > 0 else None,
            "collate_fn": collate_views,
        }

    def _loader(self, dataset: MVFoulDataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, **self._loader_options(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or offence-balanced) actions; resumable mid-epoch, views seeded per item."""
        dataset = self.dataset("train")
        weights = None
        if self.cfg.balanced_sampler:
            labels = dataset.targets("offence")
            counts = torch.bincount(labels, minlength=len(OFFENCE_CLASSES)).clamp_(min=1)
            weights = (1.0 / counts.double())[labels]
        return self.resumable_loader(
            dataset, self.batch_size, weights=weights, item_seeds=True, **self._loader_options()
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)
