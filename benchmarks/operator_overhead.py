"""Lightning overhead of the physics operator stage: lightstack's trainer vs a plain PyTorch loop.

Both loops train the same ``OperatorStage`` (encoder, latent operator, decoder and its losses
through ``OperatorStage.losses``) on the same batch of Burgers-like random data that stays on
the device, with the same precision, compile setting, optimizer and LR schedule. "lightstack"
is ``lightstack.core.trainer.build_trainer`` with the callbacks a user gets by default
(checkpoints, history, throughput, NaN guard, progress bar, CSV and TensorBoard loggers, LR
monitor); "plain" is a hand-written loop. Steps after ``--warmup`` are timed up to the end of
the last batch, so epoch-end work (checkpoint, history files) is not in the numbers. Prints one
JSON line per measurement, the variants interleaved, then one summary line with the medians
and the ratio lightstack / plain.

    python benchmarks/operator_overhead.py --precision bf16-mixed --width 512 --depth 12 \\
        --tokens 256 --batch 64 --steps 50 --warmup 10 --repeats 3 [--compile]

``--override key=value`` (repeatable) changes the lightstack run's configuration, e.g.
``training.nan_guard.enabled=false`` or ``logging.progress_bar=none``, to find what costs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from bench_common import SameBatch, emit, sync
from lightstack.core.config import merge_overrides, validate
from lightstack.core.optim import build_optimization
from lightstack.core.trainer import build_trainer
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.stages.operator import OperatorStage
from lightstack.physics.train import DEFAULT_MONITOR

Batch = dict[str, torch.Tensor]
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda or cpu (smoke runs)")
    parser.add_argument("--precision", default="bf16-mixed", choices=PRECISIONS)
    parser.add_argument("--compile", action="store_true", help="model.compile=true (regional)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=12, help="latent operator blocks")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256, help="latent tokens (grid / patch)")
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--encoder-depth", type=int, default=1)
    parser.add_argument("--decoder-depth", type=int, default=1)
    parser.add_argument("--horizon", type=int, default=2, help="loss.rollout_horizon")
    parser.add_argument(
        "--query-points", type=int, default=None, help="loss.query_points (default: all)"
    )
    parser.add_argument("--tasks", type=int, default=2, help="tasks the batch's samples cycle")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--loops",
        default="lightstack,plain",
        help="comma-separated variants to run, in this order each repeat",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the measurements, profile one more run of each loop (tables to stderr)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override for the lightstack run (repeatable)",
    )
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    args.loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = sorted(set(args.loops) - set(LOOPS))
    if unknown:
        parser.error(f"--loops: unknown {unknown}; choose from {sorted(LOOPS)}")
    return args


def make_config(args: argparse.Namespace) -> PhysicsConfig:
    """The run's configuration: lightstack's defaults plus the benchmark's sizes."""
    data: dict[str, Any] = {
        "family": "physics",
        "name": "operator_overhead",
        "data": {"task_names": [f"task{i}" for i in range(args.tasks)]},
        "model": {
            "width": args.width,
            "heads": args.heads,
            "patch_size": args.patch,
            "encoder_depth": args.encoder_depth,
            "operator_depth": args.depth,
            "decoder_depth": args.decoder_depth,
            "channels": 1,
            "spatial_shape": [args.tokens * args.patch],
            "compile": args.compile,
        },
        "loss": {"rollout_horizon": args.horizon, "query_points": args.query_points},
        "trainer": {
            "accelerator": "gpu" if args.device.type == "cuda" else "cpu",
            "devices": 1,
            "precision": args.precision,
            "max_epochs": 1,
        },
        # No validation data here: checkpoints follow train/loss (what this switch does).
        "training": {"skip_lightning_val": True},
    }
    data["data"]["train_files"] = [f"{name}.hdf5" for name in data["data"]["task_names"]]
    return validate(PhysicsConfig, merge_overrides(data, args.override, "--override"), "args")


def make_batch(args: argparse.Namespace) -> Batch:
    """Burgers-like data on the device: smooth random sine sums drifting in time."""
    g = torch.Generator().manual_seed(0)
    b, t, x = args.batch, args.horizon + 1, args.tokens * args.patch
    grid = torch.linspace(0, 1, x + 1)[:-1]
    k = torch.randint(1, 5, (b, 1, 1, 3), generator=g).float()
    phase = 2 * math.pi * torch.rand(b, 1, 1, 3, generator=g)
    amp = torch.rand(b, 1, 1, 3, generator=g)
    shift = 0.01 * torch.arange(t).view(1, t, 1, 1)
    fields = (amp * torch.sin(2 * math.pi * k * (grid.view(1, 1, x, 1) - shift) + phase)).sum(-1)
    batch = {
        "fields": fields.unsqueeze(-1),
        "grid": grid.view(1, x, 1).expand(b, x, 1).contiguous(),
        "params": torch.zeros(b, 0),
        "dt": torch.full((b,), 0.01),
        "task": torch.arange(b) % args.tasks,
    }
    dtype = torch.bfloat16 if args.precision == "bf16-true" else None
    return {
        key: value.to(args.device, dtype if value.is_floating_point() else None)
        for key, value in batch.items()
    }


def make_stage(cfg: PhysicsConfig, batch: Batch) -> OperatorStage:
    stage = OperatorStage(cfg, cfg.data.task_names or [])
    fields = batch["fields"].float().cpu()
    stage.model.set_normalization(fields.mean(dim=(0, 1, 2)), fields.std(dim=(0, 1, 2)))
    return stage


@dataclass(frozen=True)
class Timing:
    """Per step: wall-clock ms, and host CPU ms (process time, all threads; on CUDA it includes
    the time the host spends waiting in device syncs)."""

    ms: float
    cpu_ms: float


class Clock:
    """Wall-clock and process time between ``start`` and ``stop``, the device drained at both;
    ``profiler`` (optional) records the same span."""

    def __init__(self, device: torch.device, profiler: torch.profiler.profile | None = None):
        self.device, self.profiler = device, profiler
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        sync(self.device)
        if self.profiler is not None:
            self.profiler.start()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, steps: int) -> Timing:
        sync(self.device)
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        if self.profiler is not None:
            self.profiler.stop()
        return Timing(1000 * wall / steps, 1000 * cpu / steps)


class StepTimer(L.Callback):
    """Times from the end of batch ``warmup`` to the end of batch ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int, clock: Clock):
        self.warmup, self.steps, self.clock = warmup, steps, clock
        self.timing: Timing | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if i + 1 == self.warmup:
            self.clock.start()
        elif i + 1 == self.warmup + self.steps:
            self.timing = self.clock.stop(self.steps)


def lightstack_run(
    cfg: PhysicsConfig, batch: Batch, args: argparse.Namespace, clock: Clock
) -> Timing:
    stage = make_stage(cfg, batch)
    timer = StepTimer(args.warmup, args.steps, clock)
    loader = DataLoader(SameBatch(batch, args.warmup + args.steps), batch_size=None)
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(sys.stderr):
        trainer = build_trainer(cfg, Path(run_dir), DEFAULT_MONITOR, [timer], stage)
        trainer.fit(stage, loader)  # the progress bar prints to stdout: keep it off the JSON
    if timer.timing is None:
        raise RuntimeError("training stopped before the timed steps ended")
    return timer.timing


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """What Lightning wraps the training step in: autocast, or bf16 as the default dtype."""
    if precision == "bf16-mixed":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == "bf16-true":
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            yield
        finally:
            torch.set_default_dtype(previous)
    else:
        yield


def plain_run(cfg: PhysicsConfig, batch: Batch, args: argparse.Namespace, clock: Clock) -> Timing:
    stage = make_stage(cfg, batch).to(args.device)
    if args.precision == "bf16-true":
        stage.to(torch.bfloat16)
    stage.configure_model()  # model.compile as Lightning's run applies it
    total = args.warmup + args.steps
    fused = cfg.trainer.gradient_clip_val is None
    optimization = build_optimization(cfg.optimizer, stage.trainable_module(), total, fused)
    optimizer = optimization["optimizer"]
    scheduler = optimization.get("lr_scheduler", {}).get("scheduler")
    stage.train()
    for step in range(total):
        if step == args.warmup:
            clock.start()
        optimizer.zero_grad(set_to_none=True)
        with precision_context(args.precision, args.device):
            loss = stage.losses(batch).total
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return clock.stop(args.steps)


LOOPS: dict[str, Callable[[PhysicsConfig, Batch, argparse.Namespace, Clock], Timing]] = {
    "lightstack": lightstack_run,
    "plain": plain_run,
}


def peak_memory_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 3)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = args.device.type == "cuda"
    if args.precision == "32-true":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = make_config(args)
    batch = make_batch(args)
    common = {
        "benchmark": "operator_overhead",
        "precision": args.precision,
        "compile": args.compile,
        "width": args.width,
        "depth": args.depth,
        "tokens": args.tokens,
        "patch": args.patch,
        "horizon": args.horizon,
        "batch": args.batch,
        "steps": args.steps,
        "overrides": args.override,
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "lightning": L.__version__,
    }
    timings: dict[str, list[Timing]] = {name: [] for name in args.loops}
    memory: dict[str, list[float]] = {name: [] for name in args.loops}
    for repeat in range(args.repeats):
        for name in args.loops:
            torch.manual_seed(repeat)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(args.device)
            timing = LOOPS[name](cfg, batch, args, Clock(args.device))
            peak = peak_memory_gb(args.device)
            timings[name].append(timing)
            if peak is not None:
                memory[name].append(peak)
            emit(
                common
                | {
                    "loop": name,
                    "repeat": repeat,
                    "ms_per_step": round(timing.ms, 3),
                    "cpu_ms_per_step": round(timing.cpu_ms, 3),
                    "samples_per_s": round(1000 * args.batch / timing.ms, 1),
                    "peak_mem_gb": peak,
                }
            )
    summary: dict[str, Any] = {"loop": "summary"}
    for name, values in timings.items():
        ms = statistics.median(t.ms for t in values)
        summary[f"{name}_ms_per_step"] = round(ms, 3)
        summary[f"{name}_ms_all"] = [round(t.ms, 3) for t in values]
        summary[f"{name}_cpu_ms_per_step"] = round(statistics.median(t.cpu_ms for t in values), 3)
        summary[f"{name}_samples_per_s"] = round(1000 * args.batch / ms, 1)
        summary[f"{name}_peak_mem_gb"] = max(memory[name]) if memory[name] else None
    if {"lightstack", "plain"} <= set(args.loops):
        for key in ("ms_per_step", "cpu_ms_per_step"):
            ratio = summary[f"lightstack_{key}"] / summary[f"plain_{key}"]
            summary["ratio" if key == "ms_per_step" else "cpu_ratio"] = round(ratio, 4)
    emit(common | summary)
    if args.profile:
        for name in args.loops:
            profile(name, cfg, batch, args)


def profile(name: str, cfg: PhysicsConfig, batch: Batch, args: argparse.Namespace) -> None:
    """One more run of loop ``name``, its timed steps profiled: the ops and CUDA runtime calls
    (synchronisations, copies, allocations) that took the most host time, to stderr."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    LOOPS[name](cfg, batch, args, Clock(args.device, profiler))
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    print(f"\n=== {name}: top 30 by host time over {args.steps} steps\n{table}", file=sys.stderr)


if __name__ == "__main__":
    main()
