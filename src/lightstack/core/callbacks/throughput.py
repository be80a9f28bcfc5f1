"""Throughput and memory: ``perf/samples_per_s``, ``perf/step_ms``, ``perf/peak_mem_gb``.

Timings are wall-clock over a window of optimizer-agnostic training batches, so no CUDA sync
is added to the hot path: the queue of asynchronous kernels drains within the window.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

# Dense (no sparsity) peak FLOP/s of one device from the vendors' data sheets, by the compute
# dtype: "bf16" (also fp16), "tf32" (fp32 matmuls on tensor cores), "fp32". Matched on the
# lower-cased CUDA device name, first match wins (so "h100 pcie" precedes "h100").
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h200", {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("h100 pcie", {"bf16": 756e12, "tf32": 378e12, "fp32": 51.2e12}),
    ("h100", {"bf16": 989e12, "tf32": 494.7e12, "fp32": 66.9e12}),  # SXM: "H100 80GB HBM3"
    ("a100", {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
)


def compute_dtype(precision: str) -> str | None:
    """The ``PEAK_FLOPS`` column of a Lightning precision string (None for fp64)."""
    if precision.startswith(("bf16", "16")):
        return "bf16"
    if precision.startswith("32"):
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return None


def peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of one ``device_name`` GPU at ``precision``, or None when not in the table."""
    dtype = compute_dtype(precision)
    name = device_name.lower()
    for pattern, flops in PEAK_FLOPS:
        if pattern in name:
            return flops.get(dtype) if dtype else None
    return None


def batch_size_of(batch: Any) -> int:
    """Leading dimension of the first tensor found in ``batch`` (dicts, lists, tensors)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            if isinstance(item, torch.Tensor | dict | list | tuple):
                size = batch_size_of(item)
                if size:
                    return size
    return 0


class ThroughputMonitor(Callback):
    """Log samples/s and ms/step averaged over ``window`` batches, and peak CUDA memory.

    When the LightningModule defines ``flops_per_sample`` (training FLOPs of one sample: forward
    and backward, about 3x the forward), also log ``perf/mfu`` against ``peak_flops`` (FLOP/s of
    one device; default: looked up in ``PEAK_FLOPS`` from the CUDA device name and precision).
    """

    def __init__(self, window: int = 20, peak_flops: float | None = None):
        self.window = window
        self.peak_flops = peak_flops
        self._t0: float | None = None
        self._samples = 0
        self._batches = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        device = trainer.strategy.root_device
        if self.peak_flops is None and device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            self.peak_flops = peak_flops(name, str(trainer.precision))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._samples, self._batches = None, 0, 0

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.perf_counter()
        if self._t0 is None:  # first batch of the epoch includes warm-up: start the clock after it
            self._t0 = now
            return
        self._samples += batch_size_of(batch) * trainer.world_size
        self._batches += 1
        if self._batches < self.window:
            return
        elapsed = now - self._t0
        metrics = {
            "perf/samples_per_s": self._samples / elapsed,
            "perf/step_ms": 1000.0 * elapsed / self._batches,
        }
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            metrics["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 1e9
        flops = getattr(pl_module, "flops_per_sample", None)
        if flops and self.peak_flops:
            per_device = metrics["perf/samples_per_s"] / trainer.world_size
            metrics["perf/mfu"] = per_device * flops / self.peak_flops
        # Host tensors: a Python number would be copied to the device, a copy that waits for it.
        host = {name: torch.tensor(value) for name, value in metrics.items()}
        pl_module.log_dict(host, on_step=True, on_epoch=False, rank_zero_only=True)
        self._t0, self._samples, self._batches = now, 0, 0
