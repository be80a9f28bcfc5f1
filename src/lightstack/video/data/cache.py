"""A decoded-clip cache of an MVFoul tree: each clip's frame window decoded once, resized, as uint8.

``prepare_cache`` mirrors ``ROOT/<split>/`` into ``CACHE/<split>/``: the split's
``annotations.json`` copied, a ``clip_cache.json`` naming the source split folder, the stored
frame indices and the frame size, and per clip ``action_<id>/clip_<k>.npy`` (``(T, H, W, 3)``
uint8, read memory-mapped) with ``clip_<k>.json`` beside it (the source's size and mtime, the
indices and size it holds). The ``.npy`` is renamed into place before its record, so the record
commits the entry: a run killed half-way leaves entries without a record, which a rerun decodes
again, and entries with a valid record are skipped.

The stored frames are VARS's frame rule applied to ``start..end`` at ``fps`` (default: every
frame of the 16-frame window's span 63..86 at 25 fps, so a config may read the window at any
``fps`` or ``frames`` within it). Reading a cache (``CachedClips``, chosen by ``open_clips`` when
the split folder holds ``clip_cache.json``) gives the same tensors as decoding the source:
``decode_frames`` makes each frame independently of which other frames are asked for, so the
cached frame ``i`` is the frame ``i`` a direct decode returns, byte for byte.

Every entry is verified when a dataset is built: its record must exist and match the cache's
indices and size, its ``.npy`` must hold the right shape, and its source, where it still exists,
must have the size and mtime recorded. A clip that fails is read from its source instead (with
a warning naming it; ``lightstack video prepare`` again refreshes it), or skipped like an
unreadable clip when its source is gone too.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from lightstack.core.io import atomic_path, atomic_write_json
from lightstack.video.data.decode import (
    ClipError,
    RawClips,
    decode_frames,
    frames_to_clip,
    vars_frame_indices,
)
from lightstack.video.labels import load_annotations

MARKER = "clip_cache.json"
"""File in each cached split folder that makes it a cache (and says what it holds)."""
FORMAT = 1
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CacheSpec:
    """What a cached split holds: frames ``indices`` of its clips at ``size`` (H, W)."""

    indices: tuple[int, ...]
    size: tuple[int, int]

    def as_json(self) -> dict[str, Any]:
        return {"indices": list(self.indices), "size": list(self.size)}


def read_marker(split_dir: Path) -> tuple[CacheSpec, Path]:
    """The spec and source split folder of a cached split, or ``ClipError`` naming the file."""
    path = split_dir / MARKER
    data = read_json_object(path)
    try:
        version = data["format"]
        spec = CacheSpec(
            tuple(map(int, data["indices"])), (int(data["size"][0]), int(data["size"][1]))
        )
        source = Path(data["source"])
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ClipError(f"{path}: not a clip cache description ({exc!r})") from exc
    if version != FORMAT:
        raise ClipError(f"{path}: cache format {version}, expected {FORMAT}")
    return spec, source


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or ``ClipError`` naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClipError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(data, dict):
        raise ClipError(f"{path}: expected a JSON object")
    return data


def _record_path(npy: Path) -> Path:
    return npy.with_suffix(".json")


def _source_stamp(source: Path) -> dict[str, int] | None:
    try:
        stat = source.stat()
    except OSError:
        return None
    return {"source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def entry_problem(npy: Path, spec: CacheSpec, source: Path) -> str | None:
    """Why the cache entry ``npy`` cannot stand in for ``source`` (None: it can).

    A source that no longer exists is not a problem: the cache may travel without its tree.
    """
    record_file = _record_path(npy)
    if not record_file.is_file():
        return "not in the cache"
    try:
        record = read_json_object(record_file)
    except ClipError as exc:
        return str(exc)
    if record.get("indices") != list(spec.indices) or record.get("size") != list(spec.size):
        return "cached with another frame window or size"
    stamp = _source_stamp(source)
    if stamp is not None and any(record.get(k) != v for k, v in stamp.items()):
        return "its source changed since it was cached"
    try:
        frames = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as exc:
        return f"cache file {npy} unreadable ({exc})"
    expected = (len(spec.indices), *spec.size, 3)
    if frames.shape != expected or frames.dtype != np.uint8:
        return f"cache file {npy} holds {frames.dtype} {frames.shape}, expected uint8 {expected}"
    return None


class CachedClips:
    """The clips of a cached split (see the module docstring), with ``RawClips``' interface.

    ``clip`` paths are the source layout's (``<split>/action_<id>/clip_<k>.mp4``, as
    ``annotations.json`` names them) under the cache folder; each maps to its ``.npy``.
    """

    stored_suffix: ClassVar[str] = ".json"

    def __init__(self, split_dir: Path, raw: RawClips):
        self.split_dir = split_dir
        self.spec, self.source_dir = read_marker(split_dir)
        self.raw = raw
        missing = [i for i in raw.indices if i not in self.spec.indices]
        if missing or tuple(raw.size) != self.spec.size:
            held = self.spec.indices
            raise ClipError(
                f"{split_dir}: the cache holds frames {held[0]}..{held[-1]} "
                f"({len(held)} frames) at {self.spec.size[0]}x{self.spec.size[1]}; the data "
                f"config reads frames {list(raw.indices)} at {raw.size[0]}x{raw.size[1]}. Run "
                "`lightstack video prepare` with a window and size that cover it, or read the "
                "raw tree"
            )
        self.positions = [self.spec.indices.index(i) for i in raw.indices]
        self.from_source: dict[Path, Path] = {}

    def source(self, clip: Path) -> Path:
        return self.source_dir / clip.relative_to(self.split_dir)

    def probe(self, clip: Path) -> str | None:
        source = self.source(clip)
        problem = entry_problem(clip.with_suffix(".npy"), self.spec, source)
        if problem is None:
            return None
        reason = self.raw.probe(source)
        if reason is not None:
            return f"{problem}, and source {source}: {reason}"
        warnings.warn(
            f"reading clip {clip} from its source {source}: {problem} (run `lightstack video "
            "prepare` again to refresh the cache)",
            stacklevel=2,
        )
        self.from_source[clip] = source
        return None

    def read(self, clip: Path) -> torch.Tensor:
        source = self.from_source.get(clip)
        if source is not None:
            return self.raw.read(source)
        npy = clip.with_suffix(".npy")
        try:
            frames = np.load(npy, mmap_mode="r")[self.positions]
        except (OSError, ValueError, IndexError) as exc:
            raise ClipError(f"{npy}: cannot read cached clip ({exc})") from exc
        return frames_to_clip(frames)


def open_clips(split_dir: Path, raw: RawClips) -> RawClips | CachedClips:
    """``CachedClips`` when ``split_dir`` is a cached split, else ``raw``."""
    return CachedClips(split_dir, raw) if (split_dir / MARKER).is_file() else raw


# --------------------------------------------------------------------------------- preparing


def _is_split(folder: Path) -> bool:
    if not folder.is_dir() or folder.name.startswith("."):
        return False
    return (folder / "annotations.json").is_file() or any(folder.glob("action_*/clip_*.mp4"))


def split_clips(split_dir: Path) -> list[Path]:
    """The clips a dataset of ``split_dir`` reads: those of the scored actions in its
    ``annotations.json`` (listed, whether or not they exist), else every action folder's."""
    annotations = split_dir / "annotations.json"
    if annotations.is_file():
        return [clip for record in load_annotations(annotations) for clip in record.clips]
    return sorted(split_dir.glob("action_*/clip_*.mp4"))


@dataclass(frozen=True)
class _Job:
    source: Path
    npy: Path
    spec: CacheSpec


def _cache_clip(job: _Job) -> str | None:
    """Decode one clip into its cache entry; the error message if it cannot be decoded."""
    stamp = _source_stamp(job.source) or {}
    try:
        frames = decode_frames(job.source, job.spec.indices, job.spec.size, threads=1)
    except ClipError as exc:
        return str(exc)
    with atomic_path(job.npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(frames))
    record = {"source": str(job.source), **stamp, **job.spec.as_json()}
    atomic_write_json(_record_path(job.npy), record)
    return None


def _run(jobs: list[_Job], workers: int) -> Iterator[tuple[_Job, str | None]]:
    if workers == 0:
        for job in jobs:
            yield job, _cache_clip(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from zip(jobs, pool.map(_cache_clip, jobs, chunksize=4), strict=True)


def prepare_cache(
    root: str | Path,
    out: str | Path,
    *,
    size: tuple[int, int] = (224, 224),
    start: int = 63,
    end: int = 87,
    fps: float = 25.0,
    workers: int | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Decode every split of the MVFoul tree ``root`` into a cache at ``out`` (module docstring).

    ``workers`` processes decode one clip each at a time (default: one per usable core; 0: in
    this process). Entries already valid are kept. Missing source clips are skipped with a
    warning (a dataset skips them too); clips that cannot be decoded are left out and reported
    together at the end in a ``ClipError`` naming each one. Writes ``out/prepare.json`` and
    returns the same summary.
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: MVFoul root not found")
    if out == root:
        raise ClipError(f"--out {out} must be a folder outside the MVFoul root {root}")
    splits = [folder for folder in sorted(root.iterdir()) if _is_split(folder)]
    if not splits:
        raise ClipError(f"{root}: no split folder (<split>/annotations.json or action_<id>/)")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    spec = CacheSpec(tuple(vars_frame_indices(start, end, fps)), (int(size[0]), int(size[1])))
    t0 = time.perf_counter()
    jobs, summary = [], {}
    for split in splits:
        target = out / split.name
        target.mkdir(parents=True, exist_ok=True)
        marker = {"format": FORMAT, "source": str(split), **spec.as_json()}
        atomic_write_json(target / MARKER, marker)
        if (split / "annotations.json").is_file():
            with atomic_path(target / "annotations.json") as tmp:
                shutil.copyfile(split / "annotations.json", tmp)
        clips = split_clips(split)
        missing = [clip for clip in clips if not clip.is_file()]
        for clip in missing:
            warnings.warn(f"skipping clip {clip}: file not found", stacklevel=2)
        todo = [
            _Job(clip, target / clip.relative_to(split).with_suffix(".npy"), spec)
            for clip in clips
            if clip.is_file()
        ]
        todo = [job for job in todo if entry_problem(job.npy, spec, job.source) is not None]
        summary[split.name] = {
            "clips": len(clips),
            "missing": [str(c) for c in missing],
            "reused": len(clips) - len(missing) - len(todo),
            "decoded": 0,
            "failed": {},
        }
        jobs.extend(todo)
    total = sum(s["clips"] - len(s["missing"]) for s in summary.values())
    done = total - len(jobs)
    if progress is not None:
        progress(done, total)
    for job, error in _run(jobs, workers):
        split = summary[job.npy.relative_to(out).parts[0]]
        if error is None:
            split["decoded"] += 1
        else:
            split["failed"][str(job.source)] = error
        done += 1
        if progress is not None:
            progress(done, total)
    seconds = time.perf_counter() - t0
    result = {
        "root": str(root),
        "out": str(out),
        **spec.as_json(),
        "workers": workers,
        "seconds": round(seconds, 2),
        "splits": summary,
    }
    atomic_write_json(out / "prepare.json", result)
    failed = {c: e for s in summary.values() for c, e in s["failed"].items()}
    if failed:
        listed = "; ".join(failed.values())
        raise ClipError(
            f"{len(failed)} clips cannot be decoded and are not in the cache {out} (reading it "
            f"skips them, as reading the raw tree does): {listed}"
        )
    return result
