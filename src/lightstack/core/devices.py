"""Where and how a run computes: CPU threads, accelerator, precision and the distributed
strategy (DDP by name, or FSDP with the model's blocks as units)."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.strategies import FSDPStrategy, Strategy
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import nn

from lightstack.core.config import RunConfig


def set_cpu_threads(requested: int | None) -> int:
    """Set torch's intra-op threads: ``requested``, else at most the cores this process may use.

    torch counts the machine's cores even where a container or ``taskset`` allows fewer, and
    OpenMP threads that outnumber the free cores spin-wait on each other: on a loaded 2-core
    machine (load average 8) two threads ran the quickstart's step 47x slower than one (4.2 s
    against 90 ms).
    """
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    threads = requested or min(torch.get_num_threads(), available or torch.get_num_threads())
    torch.set_num_threads(threads)
    return threads


def check_accelerator(requested: str) -> str:
    if requested in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={requested!r} but no CUDA device is visible; use 'cpu' or 'auto'"
        )
    return requested


def check_precision(cfg: RunConfig) -> None:
    """Refuse fp16 mixed precision where it would run on the CPU (``auto`` included)."""
    t = cfg.trainer
    if t.precision != "16-mixed" or t.accelerator != "auto":
        return  # an explicit 'cpu' is refused by TrainerConfig already
    if not torch.cuda.is_available():
        raise ValueError(
            "trainer.precision='16-mixed' needs a CUDA GPU, but trainer.accelerator='auto' "
            "resolves to the CPU here (no CUDA device visible); use 'bf16-mixed' or '32-true'"
        )


def fsdp_wrap_modules(module: nn.Module | None) -> set[type[nn.Module]]:
    """Block types the LightningModule names as FSDP units (``fsdp_wrap_modules()``), else {}."""
    declare = getattr(module, "fsdp_wrap_modules", None)
    if not callable(declare):
        return set()
    layers = set(declare())
    bad = [t for t in layers if not (isinstance(t, type) and issubclass(t, nn.Module))]
    if bad:
        raise TypeError(
            f"{type(module).__name__}.fsdp_wrap_modules() must return nn.Module classes, got {bad}"
        )
    return layers


def build_strategy(cfg: RunConfig, module: nn.Module | None = None) -> Strategy | str:
    """``trainer.strategy`` as Lightning takes it: a name, or the configured ``FSDPStrategy``.

    FSDP wraps each block of ``module.fsdp_wrap_modules()`` as one unit (sharded, gathered just
    in time); activation checkpointing applies to the same blocks. Checkpoints are saved as one
    full state dict so ``load_checkpoint`` and ``ckpt convert`` read them like any other.
    """
    t = cfg.trainer
    if t.strategy != "fsdp":
        return t.strategy
    layers = fsdp_wrap_modules(module)
    fsdp = t.fsdp
    if not layers:
        name = type(module).__name__ if module is not None else "the LightningModule"
        hybrid = fsdp.sharding_strategy == "HYBRID_SHARD"
        needs = [
            knob
            for knob, on in (
                ("trainer.fsdp.activation_checkpointing", fsdp.activation_checkpointing),
                ("trainer.fsdp.sharding_strategy=HYBRID_SHARD", hybrid),
            )
            if on
        ]
        if needs:
            raise ValueError(
                f"{', '.join(needs)} needs the model's blocks, but {name} has no "
                "fsdp_wrap_modules() (pass module= to build_trainer)"
            )
        rank_zero_warn(
            f"strategy fsdp: {name} declares no fsdp_wrap_modules(), so the whole model is one "
            "FSDP unit and is gathered at once"
        )
    return FSDPStrategy(
        auto_wrap_policy=layers or None,
        activation_checkpointing_policy=layers if fsdp.activation_checkpointing else None,
        cpu_offload=fsdp.cpu_offload or cfg.optimizer.cpu_offload,
        sharding_strategy=fsdp.sharding_strategy,
        state_dict_type="full",
    )
