"""Decoding one MVFoul clip: the VARS frame window, seeking, resizing while converting to RGB.

The frame window follows the VARS baseline. Real clips are 125 frames at 25 fps with the foul at
frame 75; VARS keeps frames ``start..end-1`` and from those the ``j``-th where
``j % (25 / fps) < 1``, and its best models read ``start=63, end=87, fps=17``: 16 frames around
the foul (our defaults). When that rule gives a count other than ``frames``, the kept frames are
resampled evenly to ``frames``. A clip shorter than the window repeats its last frame; synthetic
clips are short, so read them with ``start=0, end=<clip length>, fps=25``.

Every read opens its own container, so these functions are safe to call from DataLoader worker
processes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
import torch

SOURCE_FPS = 25.0
"""Frame rate of the real MVFoul clips, the time base of ``start``/``end``/``fps``."""

# PyAV 17+ scales with one thread per core by default: with a DataLoader worker per core that
# oversubscribes the CPU and was slower than one thread each (earlier versions use one thread).
_ONE_SCALER_THREAD: dict[str, int] = (
    {"threads": 1} if int(av.__version__.split(".")[0]) >= 17 else {}
)


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
) -> np.ndarray:
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
    return np.stack([arrays[min(i, index)] for i in indices])


def _to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` uint8: FFmpeg's scaler converts to RGB and resizes in one pass (its
    bilinear filter widens when it shrinks, so downscaling is antialiased)."""
    out = frame.reformat(width, height, "rgb24", interpolation="BILINEAR", **_ONE_SCALER_THREAD)
    return out.to_ndarray()


def decode_frames(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int],
    threads: int = 1,
    seek: bool = True,
) -> np.ndarray:
    """Decode frames ``indices`` of one clip as ``(T, H, W, 3)`` uint8 RGB at ``size``.

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


def frames_to_clip(frames: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 frames -> the model's ``(3, T, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)


def decode_clip(
    path: str | Path,
    indices: Sequence[int],
    size: tuple[int, int],
    threads: int = 1,
    seek: bool = True,
) -> torch.Tensor:
    """``decode_frames`` as ``(3, T, H, W)`` float in [0, 1]."""
    return frames_to_clip(decode_frames(path, indices, size, threads, seek))


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


@dataclass(frozen=True)
class RawClips:
    """The clips of a split read from their video files: ``probe`` says why one cannot be used
    (``probe_files``: decode its first frame, else only check that it exists), ``read`` decodes
    frames ``indices`` at ``size`` with ``threads`` decoder threads."""

    indices: tuple[int, ...]
    size: tuple[int, int]
    threads: int = 1
    probe_files: bool = True
    stored_suffix: ClassVar[str] = ".mp4"

    def probe(self, clip: Path) -> str | None:
        if self.probe_files:
            return probe_clip(clip)
        return None if clip.is_file() else "missing"

    def read(self, clip: Path) -> torch.Tensor:
        return decode_clip(clip, self.indices, self.size, self.threads)
