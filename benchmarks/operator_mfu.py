"""Model FLOPs utilisation of the latent operator's blocks vs a plain pre-norm transformer.

Each variant trains one model for ``--steps`` timed steps (after ``--warmup``): forward and
backward under bf16 autocast, then a fused AdamW step, on random tokens already on the device.
"latent_operator" is ``lightstack.physics.models.operator.LatentOperator`` (adaLN-Zero blocks
conditioned on the time step); "plain_transformer" is a pre-norm transformer of the same width,
depth, heads and MLP ratio written here, the reference the issue's numbers were measured with.
Both run eager and under ``torch.compile``. FLOPs of one training step are counted once per
size and model with ``torch.utils.flop_counter.FlopCounterMode`` (forward and backward; the
optimizer's elementwise work is not counted), and MFU = FLOPs / step time / peak FLOP/s.

    python benchmarks/operator_mfu.py --sizes 512x12x256x64 512x12x256x256 1024x12x1024x32

A size is WIDTHxDEPTHxTOKENSxBATCH. Prints one JSON line per measurement (variants interleaved)
and one summary line per size and variant with the median; ``--profile`` prints the 15 kernels
that took the most device time per variant to stderr.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench_common import sync
from lightstack.physics.models.operator import LatentOperator

DEFAULT_SIZES = ("512x12x256x64", "512x12x256x256", "1024x12x1024x32")
MODELS = ("latent_operator", "plain_transformer")


@dataclass(frozen=True)
class Size:
    width: int
    depth: int
    tokens: int
    batch: int

    @classmethod
    def parse(cls, text: str) -> Size:
        parts = text.lower().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(
                f"size {text!r}: expected WIDTHxDEPTHxTOKENSxBATCH of positive integers, "
                "e.g. 512x12x256x64"
            )
        return cls(*(int(p) for p in parts))

    def __str__(self) -> str:
        return f"{self.width}x{self.depth}x{self.tokens}x{self.batch}"


class PlainBlock(nn.Module):
    """Pre-norm transformer block: fused QKV projection, SDPA, GELU MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, w))
        return x + self.mlp(self.norm2(x))


class PlainTransformer(nn.Module):
    def __init__(self, width: int, heads: int, depth: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(PlainBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``cond`` is ignored: the signature matches ``LatentOperator``'s."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def build_model(name: str, size: Size, heads: int, mlp_ratio: float) -> nn.Module:
    if name == "latent_operator":
        return LatentOperator(size.width, heads, size.depth, mlp_ratio, dropout=0.0, n_cond=1)
    return PlainTransformer(size.width, heads, size.depth, mlp_ratio)


@dataclass
class Workload:
    model: nn.Module
    step_fn: Callable[[], torch.Tensor]
    flops: int


def make_workload(
    name: str, compiled: bool, size: Size, args: argparse.Namespace, flops: int | None
) -> Workload:
    """Model, fused AdamW and random data on the device; FLOPs counted unless given."""
    device = args.device
    model = build_model(name, size, args.heads or size.width // args.head_dim, args.mlp_ratio)
    model.to(device).train()
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None)
    x = torch.randn(size.batch, size.tokens, size.width, device=device)
    cond = torch.rand(size.batch, 1, device=device)
    target = torch.randn_like(x)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    forward = torch.compile(model, mode=args.compile_mode, dynamic=False) if compiled else model

    def loss_of(fwd: Callable[..., torch.Tensor]) -> torch.Tensor:
        with autocast:
            out = fwd(x, cond)
        return F.mse_loss(out.float(), target)

    def step() -> torch.Tensor:
        loss = loss_of(forward)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if flops is None:
        counter = FlopCounterMode(display=False)
        with counter:
            loss_of(model).backward()  # eager: the same arithmetic, counted op by op
        model.zero_grad(set_to_none=True)
        flops = counter.get_total_flops()
    return Workload(model, step, flops)


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (tiny CPU smoke numbers stay non-zero)."""
    return float(f"{value:.{digits}g}")


def rates(flops: int, ms: float, batch: int, peak_tflops: float) -> dict[str, Any]:
    return {
        "ms_per_step": sig(ms, 5),
        "samples_per_s": sig(1000 * batch / ms),
        "flops_per_step": flops,
        "tflops_per_s": sig(flops / ms / 1e9),
        "mfu": sig(flops / (ms / 1000) / (peak_tflops * 1e12)),
    }


def time_steps(work: Workload, args: argparse.Namespace) -> float:
    """Milliseconds per step over ``args.steps`` steps after ``args.warmup``."""
    for _ in range(args.warmup):
        work.step_fn()
    sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        work.step_fn()
    sync(args.device)
    return 1000 * (time.perf_counter() - t0) / args.steps


def profile(work: Workload, label: str, args: argparse.Namespace) -> None:
    """The 15 kernels (or CPU ops off CUDA) that took the most time, to stderr."""
    cuda = args.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.profile_steps):
            work.step_fn()
        sync(args.device)
    sort_by = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=15)
    print(
        f"\n=== {label}: top 15 by {sort_by}, {args.profile_steps} steps\n{table}", file=sys.stderr
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda or cpu (smoke runs)")
    parser.add_argument(
        "--sizes", nargs="+", type=Size.parse, default=[Size.parse(s) for s in DEFAULT_SIZES]
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--compile", choices=["both", "off", "on"], default="both", help="eager, compiled or both"
    )
    parser.add_argument(
        "--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"]
    )
    parser.add_argument("--head-dim", type=int, default=64, help="heads = width / head-dim")
    parser.add_argument("--heads", type=int, default=None, help="overrides --head-dim")
    parser.add_argument("--mlp-ratio", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compile in them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    parser.add_argument("--profile", action="store_true", help="kernel table per variant")
    parser.add_argument("--profile-steps", type=int, default=3)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    for size in args.sizes:
        heads = args.heads or size.width // args.head_dim
        if heads < 1 or size.width % heads:
            parser.error(
                f"size {size}: {heads} heads do not divide the width; set --heads or --head-dim"
            )
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = args.device.type == "cuda"
    compiles = {"both": (False, True), "off": (False,), "on": (True,)}[args.compile]
    variants = [(m, c) for m in args.models for c in compiles]
    common: dict[str, Any] = {
        "benchmark": "operator_mfu",
        "device": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__,
        "precision": "bf16-mixed",
        "peak_tflops": args.peak_tflops,
        "compile_mode": args.compile_mode,
    }

    def emit(record: dict[str, Any]) -> None:
        print(json.dumps(common | record), flush=True)

    for size in args.sizes:
        heads = args.heads or size.width // args.head_dim
        shape = {**size.__dict__, "heads": heads, "mlp_ratio": args.mlp_ratio}
        flops: dict[str, int] = {}
        times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
        memory: dict[tuple[str, bool], float | None] = {}
        for repeat in range(args.repeats):
            for name, compiled in variants:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(args.device)
                work = make_workload(name, compiled, size, args, flops.get(name))
                flops[name] = work.flops
                ms = time_steps(work, args)
                peak = (
                    round(torch.cuda.max_memory_allocated(args.device) / 1e9, 3) if cuda else None
                )
                times[(name, compiled)].append(ms)
                memory[(name, compiled)] = peak
                emit(
                    shape
                    | {
                        "model": name,
                        "compile": compiled,
                        "repeat": repeat,
                        **rates(work.flops, ms, size.batch, args.peak_tflops),
                        "peak_mem_gb": peak,
                    }
                )
                if args.profile and repeat == args.repeats - 1:
                    profile(work, f"{size} {name} compile={compiled}", args)
                del work
        for (name, compiled), values in times.items():
            ms = statistics.median(values)
            emit(
                shape
                | {
                    "model": name,
                    "compile": compiled,
                    "repeat": "median",
                    **rates(flops[name], ms, size.batch, args.peak_tflops),
                    "ms_all": [sig(v, 5) for v in values],
                    "peak_mem_gb": memory[(name, compiled)],
                }
            )


if __name__ == "__main__":
    main()
