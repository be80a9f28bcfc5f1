"""benchmarks/input_pipeline.py end to end on the CPU at the tiniest sizes, and the clip-size and
decode-speed options of the video data code that it relies on."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from script_runner import BENCHMARKS, json_records, load_script

from lightstack.core.config import ConfigError
from lightstack.video.data import decode
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import decode_clip
from lightstack.video.data.mvfoul import VideoDataConfig
from lightstack.video.data.synthetic import render_frames, synthesize, write_mp4

SCRIPT = BENCHMARKS / "input_pipeline.py"
TINY_WINDOW = [
    *("--set", "data.frames=4", "--set", "data.start=0", "--set", "data.end=8"),
    *("--set", "data.fps=25", "--set", "data.size=[32,32]", "--set", "data.batch_size=2"),
]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def in_unit_interval(*values: float) -> bool:
    return all(0.0 <= v <= 1.0 for v in values)


# ---------------------------------------------------------------------------- the script


def test_video_mode_reports_wait_per_worker_count_and_consumer(tmp_path, capsys):
    data = tmp_path / "tree"
    leftover = tmp_path / "tree.partial"  # what a synthesis killed half-way leaves behind
    (leftover / "train").mkdir(parents=True)
    (leftover / "train" / "clip_0.mp4").write_bytes(b"")
    args = [
        *("video", "--clip-size", "32x48", "--clip-frames", "8", "--actions", "8"),
        *("--data", str(data), "--workers", "0", "1", "--step-ms", "2", "--model"),
        *("--batches", "3", "--warmup", "1", "--repeats", "1", "--device", "cpu"),
        *("--bitrate", "0.2", "--keyframe-interval", "4", *TINY_WINDOW),
    ]
    lines, _ = json_records(SCRIPT.name, *args)
    assert not leftover.exists() and (data / "train" / "annotations.json").is_file()
    decode, *measures = [r for r in lines if not r.get("summary")]
    summaries = [r for r in lines if r.get("summary")]

    assert decode["measure"] == "decode_clip"
    assert decode["ms_per_clip"] > 0 and decode["ms_per_clip_no_seek"] > 0
    assert decode["clips_per_batch"] == 4  # 2 actions x 2 views
    assert decode["max_batches_per_s_all_cores"] > 0
    assert (decode["clip_size"], decode["frames"], decode["size"]) == ([32, 48], 4, [32, 32])
    assert decode["data"] == "synthetic" and decode["clip_frames"] == 8
    assert decode["bitrate_mbps"] > 0 and decode["keyframes_per_clip"] == 2  # frames 0 and 4

    settings = sorted((r["workers"], r["consumer"]) for r in measures)
    assert settings == [(0, "model"), (0, "sleep"), (1, "model"), (1, "sleep")]
    for r in measures:
        assert r["batches"] == 3 and r["warmup_batches"] == max(1, r["workers"])
        assert in_unit_interval(r["wait_fraction"])
        assert r["batches_per_s"] > 0 and r["wait_ms_per_batch"] >= 0
        assert r["step_ms"] == (2.0 if r["consumer"] == "sleep" else None)
        assert r["device"] == "cpu" and r["cpus"] >= 1
    sleeps = [r for r in measures if r["consumer"] == "sleep"]
    assert all(r["consumer_ms_per_batch"] >= 2.0 for r in sleeps)
    assert len(summaries) == 4 and all(in_unit_interval(r["wait_fraction"]) for r in summaries)

    stamp = (data / "synthetic.json").stat().st_mtime_ns
    summary = json.loads((data / "synthetic.json").read_text())
    assert (summary["bitrate"], summary["keyframe_interval"]) == (200_000, 4)
    script = load_script("input_pipeline")
    again = [*args[:7], "--data", str(data), "--bitrate", "0.2", "--keyframe-interval", "4"]
    assert script.ensure_clips(script.parse_args(again)) == data  # same settings: reused
    assert (data / "synthetic.json").stat().st_mtime_ns == stamp

    # a real MVFoul root is read as it is
    capsys.readouterr()
    script.main(
        [
            *("video", "--mvfoul-root", str(data), "--split", "train", "--decode-clips", "3"),
            *("--workers", "0", "--step-ms", "1", "--batches", "2", "--warmup", "1"),
            *("--repeats", "1", "--device", "cpu", *TINY_WINDOW),
        ]
    )
    real = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [r.get("measure") or ("summary" if r.get("summary") else r["consumer"]) for r in real]
    assert kinds == ["decode_clip", "sleep", "summary"]
    assert real[0]["data"] == "real" and real[0]["clip_size"] == [32, 48]
    assert real[1]["batches"] == 2 and in_unit_interval(real[1]["wait_fraction"])


@pytest.mark.slow
def test_video_mode_with_cache_times_the_preparation_and_reads_the_cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "stale").mkdir(parents=True)  # a cache of an earlier run is remade
    (cache / "prepare.json").write_text("{}")
    args = [
        *("video", "--clip-size", "32x48", "--clip-frames", "8", "--actions", "8"),
        *("--data", str(tmp_path / "tree"), "--cache", "--cache-dir", str(cache)),
        *("--prepare-workers", "2", "--workers", "1", "--step-ms", "1", "--batches", "2"),
        *("--warmup", "1", "--repeats", "1", "--device", "cpu", *TINY_WINDOW),
    ]
    lines, _ = json_records(SCRIPT.name, *args)
    prepared = next(r for r in lines if r.get("measure") == "prepare_cache")
    assert (prepared["clips"], prepared["prepare_workers"], prepared["frames_cached"]) == (16, 2, 8)
    # both fields are rounded (seconds to 0.001, the rate to 0.1): allow exactly that
    per_1000 = 1000 * prepared["seconds"] / 16
    assert prepared["s_per_1000_clips"] == pytest.approx(per_1000, abs=1000 * 0.0005 / 16 + 0.05)
    assert prepared["cache_mb_per_clip"] == pytest.approx(8 * 32 * 32 * 3 / 1e6, rel=0.1)
    assert not (cache / "stale").exists() and (cache / "train" / "clip_cache.json").is_file()
    sleep = next(r for r in lines if r.get("consumer") == "sleep")
    assert sleep["cache"] is True and sleep["batches"] == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    script = load_script("input_pipeline")
    other = script.parse_args([*args[:9], "--cache-dir", str(tmp_path / "other")])
    with pytest.raises(SystemExit, match="holds files but no clip cache"):
        script.cache_dir(other, tmp_path)


def test_physics_mode_reports_dataloader_wait_per_variant(tiny_config_file, burgers_file):
    config = tiny_config_file
    lines, _ = json_records(
        SCRIPT.name,
        *("physics", "--config", str(config), "--steps", "4", "--warmup", "2", "--repeats", "1"),
        *("--set", f"data.train_files=[{burgers_file}]", "--set", "data.loader.batch_size=8"),
        *("--variant", "data.loader.num_workers=0"),
        *("--variant", "data.loader.num_workers=1;data.loader.persistent_workers=true"),
    )
    runs = [r for r in lines if not r.get("summary")]
    summaries = [r for r in lines if r.get("summary")]
    assert [r["num_workers"] for r in runs] == [0, 1]
    assert runs[1]["variant"] == "data.loader.num_workers=1;data.loader.persistent_workers=true"
    for r in runs:
        assert (r["mode"], r["stage"], r["cache"], r["batch"]) == ("physics", "operator", False, 8)
        assert r["steps"] == 4 and r["warmup_steps"] == 2
        assert in_unit_interval(r["wait_fraction"]) and r["wait_ms_per_step"] >= 0
        assert r["ms_per_step"] > 0 and 0 < r["step_ms_median"] <= r["ms_per_step"] * 4
    assert [s["variant"] for s in summaries] == [r["variant"] for r in runs]


def test_bad_override_and_arguments_fail_before_any_work(tmp_path, tiny_config_file, capsys):
    script = load_script("input_pipeline")
    config = tiny_config_file
    with pytest.raises(ConfigError, match="nosuch"):
        script.main(["physics", "--config", str(config), "--variant", "nosuch.key=1"])
    (tmp_path / "real" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="holds files but no synthetic tree"):
        script.ensure_clips(script.parse_args(["video", "--data", str(tmp_path / "real")]))
    assert (tmp_path / "real" / "train").is_dir()  # never overwritten
    with pytest.raises(SystemExit):
        script.parse_args(["video", "--clip-size", "32by48"])
    assert "--clip-size must be HxW" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["video", "--workers", "-1"])
    assert "--workers must be >= 0" in capsys.readouterr().err


def test_data_wait_without_measured_steps_says_why():
    probe = load_script("input_pipeline").DataWait(warmup=5, device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="no training step after the 5 warm-up steps"):
        probe.result()


# ------------------------------------------------- clip-size and decode-speed options


def noise_clip(path: Path, frames: int, keyframe_interval: int | None, **kwargs) -> Path:
    rng = np.random.default_rng(0)
    video = render_frames(3, 1, frames, (48, 64), rng)
    write_mp4(path, video, keyframe_interval=keyframe_interval, **kwargs)
    return path


def native_frames(path: Path) -> torch.Tensor:
    """Every frame at its own size as ``(3, T, H, W)`` float, decoded the plain way."""
    with av.open(str(path)) as container:
        arrays = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(arrays)).permute(3, 0, 1, 2).float() / 255


def test_keyframe_interval_and_bitrate_shape_the_clip(tmp_path):
    clip = noise_clip(tmp_path / "k4.mp4", 10, keyframe_interval=4)
    with av.open(str(clip)) as container:
        keys = [f.key_frame for f in container.decode(video=0)]
    assert [i for i, key in enumerate(keys) if key] == [0, 4, 8]
    crf = noise_clip(tmp_path / "crf.mp4", 10, keyframe_interval=4)
    low = noise_clip(tmp_path / "low.mp4", 10, keyframe_interval=4, bitrate=20_000)
    assert low.stat().st_size < crf.stat().st_size / 2
    assert native_frames(low).shape == (3, 10, 48, 64)
    with pytest.raises(ValueError, match="bitrate is in bits/s"):
        synthesize(tmp_path / "t", actions=8, bitrate=5, splits=("train",), fractions=(1,))
    with pytest.raises(ValueError, match="keyframe_interval must be >= 1"):
        synthesize(
            tmp_path / "t", actions=8, keyframe_interval=0, splits=("train",), fractions=(1,)
        )


@pytest.mark.parametrize("interval", [3, None])
def test_seeking_reads_the_same_frames_as_decoding_from_the_start(tmp_path, interval):
    clip = noise_clip(tmp_path / "clip.mp4", 20, keyframe_interval=interval)
    full = native_frames(clip)
    for indices in ([0, 1, 2], [5, 7, 9], [10, 14, 19], [17, 19, 22, 30], [25, 26]):
        expected = full[:, [min(i, 19) for i in indices]]
        for seek in (True, False):
            got = decode_clip(clip, indices, (48, 64), seek=seek)
            torch.testing.assert_close(got, expected, atol=0, rtol=0)
        threaded = decode_clip(clip, indices, (48, 64), threads=2)
        torch.testing.assert_close(threaded, expected, atol=0, rtol=0)


def test_a_failed_seek_falls_back_to_decoding_from_the_start(tmp_path, monkeypatch):
    clip = noise_clip(tmp_path / "clip.mp4", 12, keyframe_interval=4)
    expected = native_frames(clip)[:, [6, 9]]
    real = decode._indexed_frames
    calls = []

    def unreliable(container, first, seek):
        calls.append(seek)
        if seek:
            raise decode._SeekFailed
        yield from real(container, first, seek)

    monkeypatch.setattr(decode, "_indexed_frames", unreliable)
    torch.testing.assert_close(decode_clip(clip, [6, 9], (48, 64)), expected, atol=0, rtol=0)
    assert calls == [True, False]


def test_resizing_while_converting_is_an_antialiased_resize(tmp_path):
    clip = noise_clip(tmp_path / "clip.mp4", 4, keyframe_interval=None)
    got = decode_clip(clip, [0, 3], (24, 32))
    assert got.shape == (3, 2, 24, 32) and got.dtype == torch.float32
    assert got.min() >= 0.0 and got.max() <= 1.0
    frames = native_frames(clip)[:, [0, 3]].permute(1, 0, 2, 3)
    reference = F.interpolate(frames, size=(24, 32), mode="bilinear", antialias=True)
    assert (got.permute(1, 0, 2, 3) - reference).abs().mean() < 0.02


def test_decode_threads_option(tmp_path):
    synthesize(tmp_path, actions=8, views=(2, 2), frames=4, size=(16, 16), splits=("train",),
               fractions=(1,), skip_fraction=0)  # fmt: skip
    window = dict(frames=4, start=0, end=4, fps=25, size=(16, 16), seed=0)
    one = MVFoulDataset(tmp_path / "train", **window)
    two = MVFoulDataset(tmp_path / "train", decode_threads=2, **window)
    torch.testing.assert_close(one[0]["video"], two[0]["video"], atol=0, rtol=0)
    with pytest.raises(ValueError, match="decode_threads must be >= 0"):
        MVFoulDataset(tmp_path / "train", decode_threads=-1, **window)
    assert VideoDataConfig(decode_threads=0).decode_threads == 0
    with pytest.raises(ValidationError, match="decode_threads"):
        VideoDataConfig(decode_threads=-1)
