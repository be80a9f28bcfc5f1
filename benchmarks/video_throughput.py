"""Video training throughput: lightstack's trainer vs a naive Lightning Trainer vs a plain
PyTorch loop, same model, data, precision and optimizer.

Clips are random tensors already on the device, so the numbers measure the model step and the
training loop, not decoding. The loops run interleaved (A, B, C, A, B, C, ...); one JSON line
per measurement.

    python benchmarks/video_throughput.py --config configs/video/mvfoul_r2plus1d.yaml \
        --precision bf16-mixed --batch 8 --views 2 --frames 16 --size 224 --steps 30 \
        --set model.channels_last=false
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from bench_common import SameBatch, sync
from lightstack.core.config import apply_updates, load_config
from lightstack.core.optim import build_optimizer
from lightstack.core.trainer import build_trainer
from lightstack.video.config import VideoConfig
from lightstack.video.module import VideoModule


def make_batch(args: argparse.Namespace, device: torch.device) -> dict:
    b, v = args.batch, args.views
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


def lightning_run(cfg: VideoConfig, batch: dict, args: argparse.Namespace) -> float:
    """A plain ``lightning.Trainer`` with everything optional switched off."""
    module = make_module(cfg)
    total = args.steps + args.warmup
    timer = StepTimer(args.warmup, total, args.device)
    trainer = L.Trainer(
        accelerator="gpu" if args.device.type == "cuda" else "cpu",
        devices=1,
        precision=args.precision,
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, DataLoader(SameBatch(batch, total), batch_size=None))
    return timer.ms_per_step()


def lightstack_run(cfg: VideoConfig, batch: dict, args: argparse.Namespace) -> float:
    """lightstack's trainer factory with its default callbacks, as ``video train`` builds it."""
    total = args.steps + args.warmup
    cfg = apply_updates(
        cfg,
        {
            "trainer.accelerator": "gpu" if args.device.type == "cuda" else "cpu",
            "trainer.devices": 1,
            "trainer.precision": args.precision,
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


def plain_run(cfg: VideoConfig, batch: dict, args: argparse.Namespace) -> float:
    module = make_module(cfg).to(args.device).train()
    optimizer = build_optimizer(cfg.optimizer, module.model)
    dtype = torch.bfloat16 if args.precision == "bf16-mixed" else None
    for step in range(args.steps + args.warmup):
        if step == args.warmup:
            sync(args.device)
            t0 = time.perf_counter()
        with torch.autocast(args.device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            out = module.model(batch["video"], batch["view_mask"])
            loss, _ = module.criterion(out, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(args.device)
    return 1000 * (time.perf_counter() - t0) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/video/mvfoul_r2plus1d.yaml")
    parser.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed"])
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
    args = parser.parse_args()
    args.device = torch.device(args.device)
    cuda = args.device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    if args.precision == "32-true":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    cfg = load_config(args.config, ["augment.enabled=false", *args.set], VideoConfig)
    batch = make_batch(args, args.device)
    for repeat in range(args.repeats):
        loops = (("lightstack", lightstack_run), ("lightning", lightning_run), ("plain", plain_run))
        for name, run in loops:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            ms = run(cfg, batch, args)
            print(
                json.dumps(
                    {
                        "benchmark": "video_throughput",
                        "loop": name,
                        "repeat": repeat,
                        "backbone": cfg.model.backbone,
                        "channels_last": cfg.model.channels_last,
                        "precision": args.precision,
                        "batch": args.batch,
                        "views": args.views,
                        "frames": args.frames,
                        "size": args.size,
                        "ms_per_step": round(ms, 2),
                        "actions_per_s": round(1000 * args.batch / ms, 1),
                        "peak_mem_gb": (
                            round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None
                        ),
                        "device": torch.cuda.get_device_name() if cuda else "cpu",
                        "torch": torch.__version__,
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
