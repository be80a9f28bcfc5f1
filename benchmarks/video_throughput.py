"""Video training throughput: lightstack's trainer vs a naive Lightning Trainer vs a plain
PyTorch loop, same model, data, precision and optimizer; eager or compiled; bf16 or strict fp32.

Clips are random tensors already on the device, so the numbers measure the model step and the
training loop, not decoding. Every setting (precision x compile x loop) runs once per repeat,
interleaved (A, B, C, A, B, C, ...); one JSON line per measurement with ms/step, actions/s,
clips/s and peak GPU memory. ``--compile on`` sets ``model.compile``: the lightstack and
Lightning loops compile the backbone in the module's ``configure_model``, the plain loop through
the same ``maybe_compile`` call; the warm-up steps absorb the compilation. Strict fp32 turns
TF32 off and applies ``--fp32-set`` (default: the NCDHW layout, faster than channels-last in
fp32). ``--max-batch`` then searches the largest batch that fits on the GPU (eager, plain loop,
first precision) and prints one ``max_batch`` line.

    python benchmarks/video_throughput.py --precision bf16-mixed --compile off on \
        --loops lightstack plain --steps 20 --warmup 8 --repeats 2
    python benchmarks/video_throughput.py --precision 32-true --compile off on \
        --loops lightstack plain --steps 6 --warmup 4 --repeats 1
    python benchmarks/video_throughput.py --config configs/video/vars_mvit.yaml \
        --set model.pretrained_path=null --precision bf16-mixed --compile off on \
        --loops lightstack plain --steps 15 --warmup 8 --repeats 1 --max-batch
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from bench_common import SameBatch, emit, sync
from lightstack.core.compile import maybe_compile
from lightstack.core.config import apply_updates, load_config
from lightstack.core.optim import build_optimizer
from lightstack.core.trainer import build_trainer
from lightstack.video.config import VideoConfig
from lightstack.video.module import VideoModule

LOOPS = ("lightstack", "lightning", "plain")


def make_batch(args: argparse.Namespace, device: torch.device, b: int) -> dict:
    v = args.views
    return {
        "video": torch.rand(b, v, 3, args.frames, args.size, args.size, device=device),
        "view_mask": torch.ones(b, v, dtype=torch.bool, device=device),
        "action": torch.randint(0, 8, (b,), device=device),
        "offence": torch.randint(0, 4, (b,), device=device),
        "id": [str(i) for i in range(b)],
    }


class StepTimer(L.Callback):
    """Wall time of the steps after ``warmup``, ended at the last step (not at the end of fit,
    which may save a checkpoint)."""

    def __init__(self, warmup: int, total: int, device: torch.device):
        self.warmup, self.total, self.device = warmup, total, device
        self.t0 = self.t1 = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 in (self.warmup, self.total):
            sync(self.device)
            if batch_idx + 1 == self.warmup:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    def ms_per_step(self) -> float:
        return 1000 * (self.t1 - self.t0) / (self.total - self.warmup)


def make_module(cfg: VideoConfig) -> VideoModule:
    """Uniform class counts stand in for a training set's (class-weighted losses need them)."""
    return VideoModule(cfg, {"action": torch.ones(8), "offence": torch.ones(4)})


def lightning_run(cfg: VideoConfig, batch: dict, args: argparse.Namespace, precision: str) -> float:
    """A plain ``lightning.Trainer`` with everything optional switched off."""
    module = make_module(cfg)
    total = args.steps + args.warmup
    timer = StepTimer(args.warmup, total, args.device)
    trainer = L.Trainer(
        accelerator="gpu" if args.device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, DataLoader(SameBatch(batch, total), batch_size=None))
    return timer.ms_per_step()


def lightstack_run(
    cfg: VideoConfig, batch: dict, args: argparse.Namespace, precision: str
) -> float:
    """lightstack's trainer factory with its default callbacks, as ``video train`` builds it."""
    total = args.steps + args.warmup
    cfg = apply_updates(
        cfg,
        {
            "trainer.accelerator": "gpu" if args.device.type == "cuda" else "cpu",
            "trainer.devices": 1,
            "trainer.precision": precision,
            "trainer.max_steps": total,
            "trainer.max_epochs": 1,
            "training.skip_lightning_val": True,
        },
    )
    module = make_module(cfg)
    timer = StepTimer(args.warmup, total, args.device)
    # Lightning's model summary and bar go to stdout: keep stdout for the JSON lines
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(sys.stderr):
        trainer = build_trainer(cfg, Path(run_dir), "train/loss", [timer], module)
        trainer.fit(module, DataLoader(SameBatch(batch, total), batch_size=None))
    return timer.ms_per_step()


def plain_run(cfg: VideoConfig, batch: dict, args: argparse.Namespace, precision: str) -> float:
    """A hand-written loop over the same module; ``model.compile`` goes through the same
    ``maybe_compile`` call as the module's ``configure_model``."""
    module = make_module(cfg).to(args.device).train()
    maybe_compile(
        module.model.backbone, cfg.model.compile, cfg.model.compile_mode, device=args.device
    )
    optimizer = build_optimizer(cfg.optimizer, module.model)
    for step in range(args.steps + args.warmup):
        if step == args.warmup:
            sync(args.device)
            t0 = time.perf_counter()
        plain_step(module, optimizer, batch, precision)
    sync(args.device)
    return 1000 * (time.perf_counter() - t0) / args.steps


def plain_step(
    module: VideoModule, optimizer: torch.optim.Optimizer, batch: dict, precision: str
) -> None:
    bf16 = precision == "bf16-mixed"
    with torch.autocast(batch["video"].device.type, dtype=torch.bfloat16, enabled=bf16):
        out = module.model(batch["video"], batch["view_mask"])
        loss, _ = module.criterion(out, batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def out_of_memory(exc: RuntimeError) -> bool:
    """A CUDA allocation failure, from PyTorch's allocator or a cuDNN/cuBLAS workspace."""
    text = str(exc)
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(
        marker in text for marker in ("out of memory", "STATUS_ALLOC_FAILED")
    )


def fits(
    module: VideoModule, optimizer: torch.optim.Optimizer, batch: dict, precision: str
) -> bool:
    """Whether two training steps of ``batch`` fit in GPU memory."""
    try:
        for _ in range(2):
            plain_step(module, optimizer, batch, precision)
        sync(batch["video"].device)
        return True
    except RuntimeError as exc:
        if not out_of_memory(exc):
            raise
        optimizer.zero_grad(set_to_none=True)
        return False
    finally:
        del batch
        gc.collect()
        torch.cuda.empty_cache()


def max_batch(cfg: VideoConfig, args: argparse.Namespace, precision: str) -> dict:
    """The largest batch (actions of ``--views`` clips) whose training step fits: doubling from
    ``--batch`` until a step runs out of memory, then bisecting. Eager model, plain loop."""
    module = make_module(cfg).to(args.device).train()
    optimizer = build_optimizer(cfg.optimizer, module.model)

    def try_batch(b: int) -> bool:
        return fits(module, optimizer, make_batch(args, args.device, b), precision)

    low, high = 0, args.batch
    while high <= args.max_batch_limit and try_batch(high):
        low, high = high, high * 2
    if high > args.max_batch_limit:
        return {"max_batch": low, "limit_reached": True}
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if try_batch(mid) else (low, mid)
    return {"max_batch": low, "limit_reached": False}


def record(cfg: VideoConfig, args: argparse.Namespace, **values) -> dict:
    cuda = args.device.type == "cuda"
    return {
        "benchmark": "video_throughput",
        "config": args.config,
        "backbone": cfg.model.backbone,
        "channels_last": cfg.model.channels_last,
        "batch": args.batch,
        "views": args.views,
        "frames": args.frames,
        "size": args.size,
        **values,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
    }


def run_config(args: argparse.Namespace, precision: str, compiled: bool) -> VideoConfig:
    """The config of one setting: ``--set``, then ``--fp32-set`` for strict fp32, then
    ``model.compile``."""
    extra = args.fp32_set if precision == "32-true" else []
    overrides = ["augment.enabled=false", *args.set, *extra, f"model.compile={compiled}"]
    return load_config(args.config, overrides, VideoConfig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/video/mvfoul_r2plus1d.yaml")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["bf16-mixed"],
        choices=["32-true", "bf16-mixed"],
        help="one or more; strict fp32 (no TF32) for 32-true",
    )
    parser.add_argument(
        "--compile", nargs="+", default=["off"], choices=["off", "on"], help="model.compile"
    )
    parser.add_argument(
        "--loops", nargs="+", default=list(LOOPS), choices=list(LOOPS), help="loops to time"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda", help="cuda or cpu (smoke runs)")
    parser.add_argument(
        "--set", nargs="*", default=[], help="dotted overrides, e.g. model.channels_last=false"
    )
    parser.add_argument(
        "--fp32-set",
        nargs="*",
        default=["model.channels_last=false"],
        help="overrides for the 32-true runs only (default: the NCDHW layout, faster in fp32)",
    )
    parser.add_argument(
        "--max-batch",
        action="store_true",
        help="then search the largest batch that fits (GPU only; first --precision, eager)",
    )
    parser.add_argument("--max-batch-limit", type=int, default=1024)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    # strict fp32 for 32-true; bf16 matmuls and convolutions do not read these flags
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    configs = {
        (p, c): run_config(args, p, c == "on") for p in args.precision for c in args.compile
    }  # bad overrides fail here, before any work
    batch = make_batch(args, args.device, args.batch)
    runs = {"lightstack": lightstack_run, "lightning": lightning_run, "plain": plain_run}
    for repeat in range(args.repeats):
        for precision in args.precision:
            for compiled in args.compile:
                cfg = configs[precision, compiled]
                for name in args.loops:
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats()
                    ms = runs[name](cfg, batch, args, precision)
                    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
                    values = {
                        "loop": name,
                        "repeat": repeat,
                        "precision": precision,
                        "compile": compiled == "on",
                        "ms_per_step": round(ms, 2),
                        "actions_per_s": round(1000 * args.batch / ms, 1),
                        "clips_per_s": round(1000 * args.batch * args.views / ms, 1),
                        "peak_mem_gb": round(peak, 2) if peak is not None else None,
                    }
                    emit(record(cfg, args, **values))
    if args.max_batch:
        if not cuda:
            raise SystemExit("--max-batch needs --device cuda")
        precision = args.precision[0]
        del batch
        gc.collect()
        torch.cuda.empty_cache()
        cfg = run_config(args, precision, compiled=False)
        found = max_batch(cfg, args, precision)
        emit(record(cfg, args, measure="max_batch", precision=precision, **found))


if __name__ == "__main__":
    main()
