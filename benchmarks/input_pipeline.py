"""Input pipeline: the fraction of step time spent waiting for data.

``video``: synthesises a few MVFoul actions with real-size clips (125 frames at 25 fps, 1280x720
or 398x224, H.264 at a broadcast-like bitrate, one keyframe per clip unless told otherwise),
then reads them through lightstack's own MVFoul dataset and ``collate_views`` (the config's
16-frame window, resized to 224x224, 2 views per action) with 1..16 DataLoader workers. A
consumer takes each batch: a sleep of ``--step-ms`` (after copying the batch to the GPU on
``--device cuda``) or, with ``--model``, the real training step of the config's model. The
wait fraction is the time blocked in ``next(iterator)`` over the total, after a warm-up of
``max(--warmup, workers)`` batches (the workers' first round). The sampler draws actions with
replacement, so a handful of actions give as many batches as asked; the clips sit in the page
cache, as a data set that fits in memory does after its first epoch. ``--mvfoul-root`` reads
real MVFoul clips instead (``--set data.probe_clips=false`` skips opening every clip first).
The first line times single clips in this process and reports the clips' bitrate and keyframes:
seeking to the window only pays where a keyframe precedes it. ``--cache`` first decodes the
clips into a cache with ``lightstack video prepare``'s code (into ``--cache-dir``, default
beside the tree; remade on every run, so its time is measured: one ``prepare_cache`` line with
the seconds per 1000 clips, scaled from the clips prepared) and then reads the batches from the
cache instead of decoding them.

``physics``: trains a physics config (``--config``, dotted ``--set`` overrides) for
``--warmup + --steps`` steps through lightstack's trainer with Lightning's ``SimpleProfiler``
and reports the fraction of the training time after the warm-up spent in
``[_TrainingEpochLoop].train_dataloader_next``, and ms/step. Lightning validation is off
unless ``--set training.skip_lightning_val=false`` (its time is then left out). Each
``--variant`` (overrides joined by ``;``) is one setting to compare: they run interleaved.

One JSON line per measurement, then one ``summary`` line per setting with medians over the
interleaved repeats. Run from the repository root with ``PYTHONPATH=src``:

    python benchmarks/input_pipeline.py video --resolution 720p --workers 1 2 4 8 16 \
        --step-ms 135 250 --repeats 2
    python benchmarks/input_pipeline.py video --resolution 224p --workers 4 8 16 --model
    python benchmarks/input_pipeline.py video --mvfoul-root /data/mvfoul --workers 8 16
    python benchmarks/input_pipeline.py video --resolution 720p --actions 24 --cache \
        --workers 8 16 --step-ms 140 --model --repeats 2
    python benchmarks/input_pipeline.py physics --config configs/physics/burgers1d.yaml \
        --set 'data.train_files=[data/burgers.h5]' --steps 200 --repeats 2
    python benchmarks/input_pipeline.py physics --config configs/physics/pipeline.yaml \
        --set stage=diff_residual --set init_from=runs/op/checkpoints/best.ckpt \
        --variant cache.enabled=false --variant cache.enabled=true
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import av
import lightning as L
import torch
from lightning.pytorch.profilers import SimpleProfiler
from torch.utils.data import DataLoader, RandomSampler

from bench_common import emit, sync
from lightstack.core.config import load_config
from lightstack.core.optim import build_optimizer
from lightstack.core.run import claim_run_dir
from lightstack.core.trainer import run_fit
from lightstack.physics import stages
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.train import DEFAULT_MONITOR, with_data_shapes
from lightstack.video.config import VideoConfig
from lightstack.video.data.cache import prepare_cache
from lightstack.video.data.collate import collate_views
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import SOURCE_FPS
from lightstack.video.data.decode import decode_clip as read_clip
from lightstack.video.data.mvfoul import MVFoulDataModule
from lightstack.video.data.synthetic import synthesize
from lightstack.video.module import VideoModule

RESOLUTIONS: dict[str, tuple[tuple[int, int], float]] = {
    "720p": ((720, 1280), 5.0),
    "224p": ((224, 398), 1.0),
}
"""Clip size (H, W) of the two MVFoul releases and the default bitrate (Mbit/s) of its clips."""

FETCH_ACTION = "[_TrainingEpochLoop].train_dataloader_next"
"""Lightning's profiler action around each ``next()`` on the training data fetcher."""

Batch = dict[str, Any]


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "cpus": usable_cpus(),
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
    }


def summarise(records: list[dict[str, Any]], keys: tuple[str, ...], values: tuple[str, ...]):
    """One ``summary`` line per setting ``keys``: the median of each of ``values``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record[k] for k in keys), []).append(record)
    for setting, group in groups.items():
        medians = {v: round(statistics.median(r[v] for r in group), 4) for v in values}
        emit({"summary": True, **dict(zip(keys, setting, strict=True)), **medians})


# ---------------------------------------------------------------------------------------- video


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        message = f"--clip-size must be HxW, e.g. 720x1280; got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    return h, w


def clip_settings(args: argparse.Namespace) -> tuple[tuple[int, int], int | None]:
    """Clip size and bitrate (bits/s, ``None``: constant quality) from the flags."""
    size, default_mbps = RESOLUTIONS[args.resolution]
    size = args.clip_size or size
    mbps = default_mbps if args.bitrate is None else args.bitrate
    return size, (round(mbps * 1e6) if mbps > 0 else None)


def ensure_clips(args: argparse.Namespace) -> Path:
    """The synthetic tree in ``args.data``: reused when it was made with the same settings,
    written otherwise. A folder that holds anything else is refused, never overwritten. The
    tree is written beside it and renamed into place when complete, so a killed run leaves no
    half-written tree behind."""
    size, bitrate = clip_settings(args)
    wanted = {
        "generator": "lightstack.video.data.synthetic",
        "frames": args.clip_frames,
        "size": list(size),
        "fps": 25,
        "bitrate": bitrate,
        "keyframe_interval": args.keyframe_interval,
        "views": [2, 2],
    }
    root = Path(
        args.data
        or f"runs/input_pipeline/mvfoul-{size[0]}x{size[1]}-{bitrate}-"
        f"k{args.keyframe_interval}-f{args.clip_frames}"
    )
    summary_file = root / "synthetic.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if summary.get("generator") != wanted["generator"]:
            raise SystemExit(f"--data {root}: {summary_file} was not written by synthesize()")
        same = all(summary.get(k) == v for k, v in wanted.items())
        if same and summary["splits"]["train"]["actions"] == args.actions:
            return root
    elif root.is_dir() and any(root.iterdir()):
        raise SystemExit(
            f"--data {root} holds files but no synthetic tree; give a new folder "
            "(real clips are read with --mvfoul-root)"
        )

    def progress(done: int, total: int) -> None:
        print(f"synthesising {root}: {done}/{total} actions", file=sys.stderr, flush=True)

    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    synthesize(
        partial,
        args.actions,
        views=(2, 2),
        frames=args.clip_frames,
        size=size,
        splits=("train",),
        fractions=(1.0,),
        fps=25,
        skip_fraction=0.0,
        bitrate=bitrate,
        keyframe_interval=args.keyframe_interval,
        progress=progress,
    )
    if root.exists():  # a synthetic tree of other settings (checked above)
        shutil.rmtree(root)
    partial.rename(root)
    return root


def clip_files(split_dir: Path, limit: int) -> list[Path]:
    """Up to ``limit`` clips of the split, spread over it."""
    clips = sorted(split_dir.glob("action_*/clip_*.mp4"))
    if not clips:
        raise SystemExit(f"{split_dir}: no action_*/clip_*.mp4 clips")
    return clips[:: max(1, len(clips) // limit)][:limit]


def clip_stats(clips: list[Path]) -> dict[str, Any]:
    """Size of the first clip; frames, bitrate and keyframes per clip (medians), read from the
    containers without decoding. Seeking only helps where keyframes come before the window."""
    frames, mbps, keys = [], [], []
    for clip in clips:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0]
            packets = [(p.size, p.is_keyframe) for p in container.demux(stream) if p.size]
            seconds = len(packets) / float(stream.average_rate or SOURCE_FPS)
        frames.append(len(packets))
        mbps.append(sum(n for n, _ in packets) * 8 / seconds / 1e6)
        keys.append(sum(key for _, key in packets))
    with av.open(str(clips[0])) as container:
        codec = container.streams.video[0].codec_context
        size = [codec.height, codec.width]
    return {
        "clip_size": size,
        "clip_frames": statistics.median(frames),
        "bitrate_mbps": round(statistics.median(mbps), 2),
        "keyframes_per_clip": statistics.median(keys),
    }


def decode_record(dataset: MVFoulDataset, clips: list[Path], cfg: VideoConfig) -> dict[str, Any]:
    """Median ms to read one view in this process (with and without seeking), and what that
    allows at most on all cores."""
    times: dict[bool, list[float]] = {True: [], False: []}
    threads = cfg.data.decode_threads
    for clip in clips:
        for seek in (True, False):
            t0 = time.perf_counter()
            read_clip(clip, dataset.indices, dataset.size, threads, seek)
            times[seek].append(time.perf_counter() - t0)
    ms = statistics.median(times[True]) * 1000
    clips_per_batch = cfg.data.batch_size * (cfg.data.views_per_sample_train or 1)
    cpu_s_per_batch = ms * clips_per_batch / 1000
    return {
        "measure": "decode_clip",
        "ms_per_clip": round(ms, 1),
        "ms_per_clip_no_seek": round(statistics.median(times[False]) * 1000, 1),
        "clips_per_batch": clips_per_batch,
        "cpu_s_per_batch": round(cpu_s_per_batch, 3),
        "max_batches_per_s_all_cores": round(usable_cpus() / cpu_s_per_batch, 2),
    }


def cache_dir(args: argparse.Namespace, root: Path) -> Path:
    """``--cache-dir`` (default: ``<tree>-cache`` beside it), emptied first so that the whole
    preparation is timed. A folder that holds anything but a clip cache is refused."""
    path = Path(args.cache_dir or root.with_name(root.name + "-cache"))
    if path.is_dir() and any(path.iterdir()):
        if not (path / "prepare.json").is_file():
            raise SystemExit(f"--cache-dir {path} holds files but no clip cache; give a new folder")
        shutil.rmtree(path)
    return path


def prepare_record(root: Path, out: Path, cfg: VideoConfig, workers: int) -> dict[str, Any]:
    """Prepare the cache of ``root`` as ``lightstack video prepare`` does; time it."""
    data = cfg.data
    t0 = time.perf_counter()
    summary = prepare_cache(
        root, out, size=data.size, start=data.start, end=data.end, workers=workers
    )
    seconds = time.perf_counter() - t0
    clips = sum(s["decoded"] for s in summary["splits"].values())
    npy = sum(f.stat().st_size for f in out.rglob("*.npy"))
    return {
        "measure": "prepare_cache",
        "clips": clips,
        "prepare_workers": workers,
        "frames_cached": len(summary["indices"]),
        "seconds": round(seconds, 3),
        "s_per_1000_clips": round(1000 * seconds / clips, 1),
        "cache_mb_per_clip": round(npy / clips / 1e6, 3),
    }


def sleep_consumer(step_ms: float, device: torch.device) -> Callable[[Batch], None]:
    """Copy the clips to the GPU (as a training step's batch transfer would), then sleep."""

    def consume(batch: Batch) -> None:
        if device.type == "cuda":
            batch["video"].to(device, non_blocking=True)
            sync(device)
        time.sleep(step_ms / 1000)

    return consume


def model_consumer(cfg: VideoConfig, device: torch.device, precision: str):
    """One training step of the config's model (forward, loss, backward, optimiser), like
    ``benchmarks/video_throughput.py``'s plain loop; waits for the GPU before returning."""
    module = VideoModule(cfg, {"action": torch.ones(8), "offence": torch.ones(4)})
    module = module.to(device).train()
    optimizer = build_optimizer(cfg.optimizer, module.model)
    bf16 = precision == "bf16-mixed"

    def consume(batch: Batch) -> None:
        batch = {
            k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()
        }
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = module.model(batch["video"], batch["view_mask"])
            loss, _ = module.criterion(out, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)

    return consume


def video_loader(
    dataset: MVFoulDataset, cfg: VideoConfig, workers: int, batches: int, device: torch.device
) -> DataLoader:
    """The config's loader settings over ``batches`` batches of actions drawn with replacement."""
    data = cfg.data
    sampler = RandomSampler(
        dataset,
        replacement=True,
        num_samples=batches * data.batch_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return DataLoader(
        dataset,
        batch_size=data.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_views,
        pin_memory=data.pin_memory and device.type == "cuda",
        prefetch_factor=data.prefetch_factor if workers > 0 else None,
        drop_last=True,
    )


def measure_wait(
    batches: Iterable[Batch],
    consume: Callable[[Batch], None],
    warmup: int,
    steps: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Time blocked in ``next`` and time in ``consume`` over up to ``steps`` batches after
    ``warmup`` (stops early, after at least 3, once ``max_seconds`` have passed)."""
    iterator = iter(batches)
    for _ in range(warmup):
        consume(next(iterator))
    wait = busy = 0.0
    done = 0
    start = time.perf_counter()
    while done < steps:
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        consume(batch)
        t2 = time.perf_counter()
        wait, busy, done = wait + t1 - t0, busy + t2 - t1, done + 1
        if t2 - start > max_seconds and done >= 3:
            break
    total = time.perf_counter() - start
    del iterator  # stops the workers
    return {
        "batches": done,
        "batches_per_s": round(done / total, 3),
        "wait_fraction": round(wait / total, 4),
        "wait_ms_per_batch": round(1000 * wait / done, 1),
        "consumer_ms_per_batch": round(1000 * busy / done, 1),
    }


def run_video(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.mvfoul_root:
        root, split = Path(args.mvfoul_root), args.split
    else:
        root, split = ensure_clips(args), "train"
    overrides = [f"data.root={root}", f"data.train_split={split}", "augment.enabled=false"]
    cfg = load_config(args.config, [*overrides, *args.set], VideoConfig)
    clips = clip_files(root / split, args.decode_clips)
    prepared = None
    if args.cache:
        out = cache_dir(args, root)
        prepared = prepare_record(root, out, cfg, args.prepare_workers or usable_cpus())
        cfg = load_config(args.config, [*overrides, *args.set, f"data.root={out}"], VideoConfig)
    dataset = MVFoulDataModule(cfg.data).dataset("train")
    common = {
        "benchmark": "input_pipeline",
        "mode": "video",
        "data": "real" if args.mvfoul_root else "synthetic",
        "cache": args.cache,
        **clip_stats(clips),
        "frames": len(dataset.indices),
        "size": list(dataset.size),
        "batch": cfg.data.batch_size,
        "views": cfg.data.views_per_sample_train,
        "decode_threads": cfg.data.decode_threads,
        "prefetch_factor": cfg.data.prefetch_factor,
        **environment(device),
    }
    emit({**common, **decode_record(dataset, clips, cfg)})
    if prepared is not None:
        emit({**common, **prepared})
    consumers: list[tuple[str, float | None, Callable[[Batch], None]]] = [
        ("sleep", ms, sleep_consumer(ms, device)) for ms in args.step_ms
    ]
    if args.model:
        consumers.append(("model", None, model_consumer(cfg, device, args.precision)))
    records = []
    for repeat in range(args.repeats):
        for workers in args.workers:
            warmup = max(args.warmup, workers)
            for name, step_ms, consume in consumers:
                loader = video_loader(dataset, cfg, workers, warmup + args.batches, device)
                result = measure_wait(loader, consume, warmup, args.batches, args.max_seconds)
                record = {
                    **common,
                    "repeat": repeat,
                    "workers": workers,
                    "consumer": name,
                    "step_ms": step_ms,
                    "warmup_batches": warmup,
                    **result,
                }
                emit(record)
                records.append(record)
    summarise(
        records,
        ("mode", "workers", "consumer", "step_ms"),
        ("wait_fraction", "batches_per_s", "consumer_ms_per_batch"),
    )


# -------------------------------------------------------------------------------------- physics


class DataWait(L.Callback):
    """Wall time of the training steps after ``warmup`` (validation left out) and the time the
    ``SimpleProfiler`` recorded in ``train_dataloader_next`` over the same steps."""

    def __init__(self, warmup: int, device: torch.device):
        self.warmup, self.device = warmup, device
        self.seen = self.steps = 0
        self.fetch_from = self.fetch_to = 0
        self.t_mark = self.t_last = self.t_batch = self.t_val = 0.0
        self.validation = 0.0
        self.step_s: list[float] = []
        self.durations: list[float] = []

    @staticmethod
    def fetches(trainer: L.Trainer) -> list[float]:
        profiler = trainer.profiler
        if not isinstance(profiler, SimpleProfiler):
            raise TypeError(f"needs training.profile=simple, got {type(profiler).__name__}")
        return profiler.recorded_durations[FETCH_ACTION]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.t_batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen += 1
        if self.seen < self.warmup:
            return
        if self.seen == self.warmup:
            sync(self.device)
            self.t_mark = time.perf_counter()
            self.fetch_from = len(self.fetches(trainer))
            return
        self.steps += 1
        self.step_s.append(time.perf_counter() - self.t_batch)
        if trainer.global_step >= trainer.max_steps:  # the last step: wait for the GPU
            sync(self.device)
        self.t_last = time.perf_counter()
        self.durations = self.fetches(trainer)
        self.fetch_to = len(self.durations)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.t_val = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.seen > self.warmup:
            self.validation += time.perf_counter() - self.t_val

    def result(self) -> dict[str, Any]:
        if self.steps == 0:
            raise RuntimeError(
                f"no training step after the {self.warmup} warm-up steps: the run stopped after "
                f"{self.seen} steps (raise trainer.max_epochs or lower --warmup)"
            )
        wait = sum(self.durations[self.fetch_from : self.fetch_to])
        total = self.t_last - self.t_mark - self.validation
        return {
            "steps": self.steps,
            "ms_per_step": round(1000 * total / self.steps, 3),
            "step_ms_median": round(1000 * statistics.median(self.step_s), 3),
            "wait_fraction": round(min(wait / total, 1.0), 4),
            "wait_ms_per_step": round(1000 * wait / self.steps, 3),
        }


def physics_config(args: argparse.Namespace, variant: list[str]) -> PhysicsConfig:
    """The config with the benchmark's defaults, then ``--set`` and the variant's overrides,
    then the settings the measurement needs."""
    defaults = [
        "trainer.max_epochs=-1",
        "trainer.max_time=null",
        "training.skip_lightning_val=true",
        "logging.progress_bar=none",
    ]
    forced = [f"trainer.max_steps={args.warmup + args.steps}", "training.profile=simple"]
    return load_config(args.config, [*defaults, *args.set, *variant, *forced], PhysicsConfig)


def physics_device(cfg: PhysicsConfig) -> torch.device:
    cuda = torch.cuda.is_available() and cfg.trainer.accelerator != "cpu"
    return torch.device("cuda" if cuda else "cpu")


def physics_run(cfg: PhysicsConfig, run_dir: Path, warmup: int) -> tuple[dict, PhysicsConfig]:
    """Train like ``lightstack.physics.train.train``, with the ``DataWait`` callback."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = stages.build_datamodule(cfg)
    cfg = with_data_shapes(cfg, dm)
    stage = stages.build_stage(cfg, dm)
    probe = DataWait(warmup, physics_device(cfg))
    # stdout carries the JSON lines only
    with claim_run_dir(run_dir, cfg.name) as path, contextlib.redirect_stdout(sys.stderr):
        run_fit(cfg, path, stage, dm, DEFAULT_MONITOR, resume="never", extra_callbacks=[probe])
    return probe.result(), cfg


def run_physics(args: argparse.Namespace) -> None:
    """Each variant once per repeat, interleaved (A, B, A, B)."""
    variants = [[o for o in v.split(";") if o.strip()] for v in args.variant] or [[]]
    configs = [physics_config(args, variant) for variant in variants]  # bad overrides fail here
    records = []
    with tempfile.TemporaryDirectory(prefix="input_pipeline-") as tmp:
        base = Path(args.run_dir) if args.run_dir else Path(tmp)
        for repeat in range(args.repeats):
            for k, (variant, cfg) in enumerate(zip(variants, configs, strict=True)):
                run_dir = base / f"variant-{k}-repeat-{repeat}"
                result, resolved = physics_run(cfg, run_dir, args.warmup)
                loader = resolved.data.loader
                record = {
                    "benchmark": "input_pipeline",
                    "mode": "physics",
                    "repeat": repeat,
                    "config": str(args.config),
                    "overrides": args.set,
                    "variant": ";".join(variant),
                    "stage": resolved.stage,
                    "cache": resolved.cache.enabled,
                    "batch": loader.batch_size,
                    "num_workers": loader.num_workers,
                    "precision": resolved.trainer.precision,
                    "warmup_steps": args.warmup,
                    **result,
                    **environment(physics_device(resolved)),
                }
                emit(record)
                records.append(record)
    summarise(
        records,
        ("mode", "variant", "stage", "cache"),
        ("wait_fraction", "ms_per_step", "wait_ms_per_step"),
    )


# ----------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = parser.add_subparsers(dest="mode", required=True)

    video = modes.add_parser("video", help="MVFoul clip decoding with 1..16 workers")
    video.add_argument("--config", default="configs/video/mvfoul_r2plus1d.yaml")
    video.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. data.decode_threads=2 (repeatable)",
    )
    video.add_argument("--resolution", choices=sorted(RESOLUTIONS), default="720p")
    video.add_argument(
        "--clip-size",
        type=parse_size,
        default=None,
        metavar="HxW",
        help="clip size instead of the resolution's (smoke tests)",
    )
    video.add_argument("--clip-frames", type=int, default=125, help="frames per clip (25 fps)")
    video.add_argument(
        "--bitrate",
        type=float,
        default=None,
        metavar="MBIT_S",
        help="clip bitrate; default 5 (720p) or 1 (224p); 0: constant quality",
    )
    video.add_argument(
        "--keyframe-interval",
        type=int,
        default=250,
        help="frames between keyframes (x264's default 250: one per clip)",
    )
    video.add_argument("--actions", type=int, default=8, help="synthetic actions (2 views each)")
    data = video.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, help="folder of the synthetic tree (reused)")
    data.add_argument(
        "--mvfoul-root", default=None, help="read real MVFoul clips from this root instead"
    )
    video.add_argument("--split", default="train", help="split folder of --mvfoul-root")
    video.add_argument(
        "--cache", action="store_true", help="prepare a decoded-clip cache (timed), read from it"
    )
    video.add_argument("--cache-dir", default=None, help="where --cache writes (remade each run)")
    video.add_argument(
        "--prepare-workers", type=int, default=0, help="processes for --cache (0: one per core)"
    )
    video.add_argument(
        "--decode-clips", type=int, default=16, help="clips timed one by one in this process"
    )
    video.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    video.add_argument("--step-ms", type=float, nargs="+", default=[135.0, 250.0])
    video.add_argument("--model", action="store_true", help="also run the real model step")
    video.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed"])
    video.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    video.add_argument("--batches", type=int, default=32, help="measured batches per setting")
    video.add_argument("--warmup", type=int, default=3, help="at least this many (or workers)")
    video.add_argument(
        "--max-seconds",
        type=float,
        default=90.0,
        help="stop measuring a setting after this long (at least 3 batches)",
    )
    video.add_argument("--repeats", type=int, default=2)

    physics = modes.add_parser("physics", help="time in train_dataloader_next of a physics run")
    physics.add_argument("--config", required=True)
    physics.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, e.g. cache.enabled=true (repeatable)",
    )
    physics.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE[;KEY=VALUE]",
        help="a setting to compare, run interleaved with the others (repeatable), "
        "e.g. --variant cache.enabled=false --variant cache.enabled=true",
    )
    physics.add_argument("--steps", type=int, default=100, help="measured training steps")
    physics.add_argument("--warmup", type=int, default=10, help="steps before measuring")
    physics.add_argument("--repeats", type=int, default=2)
    physics.add_argument("--run-dir", default=None, help="keep the runs here (default: temp)")
    args = parser.parse_args(argv)
    for name in ("repeats", "warmup", "steps", "batches", "actions", "clip_frames", "decode_clips"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.mode == "video" and min(args.workers) < 0:
        parser.error(f"--workers must be >= 0, got {args.workers}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.backends.cudnn.benchmark = True
    if args.mode == "video":
        run_video(args)
    else:
        run_physics(args)


if __name__ == "__main__":
    main()
