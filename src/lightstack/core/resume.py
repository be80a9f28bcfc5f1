"""Exact resume: the data loader position, per-item randomness and RNG streams in checkpoints.

Lightning restores the model, optimizer, schedulers, precision scaler, loop counters and callback
states from a checkpoint, but two things it leaves out make a resumed run diverge:

- **The data loader position.** A DataLoader restarts its epoch from the first batch, so a run
  resumed mid-epoch would see the first batches again instead of the remaining ones.
  ``ResumableSampler`` draws each epoch's order from ``(seed, epoch)`` only and can skip the
  samples already trained on; ``ResumableDataModule`` builds the training loader with it and
  stores the position (batches trained in the epoch, as Lightning's loop counts them) in the
  checkpoint through the datamodule's ``state_dict``/``load_state_dict`` hooks.
- **Random number streams.** ``RestoreRNG`` stores the Python, NumPy, torch CPU and CUDA RNG
  states of every process in the checkpoint and puts them back when training restarts.
  Randomness inside a dataset (random views, crops) would still depend on which worker process
  read an item and what it read before; ``item_seeds=True`` gives every item of an epoch its
  own seed from the sampler, so an item's random draws depend only on ``(seed, epoch,
  position)``, whatever the number of workers and wherever a run was resumed.

``verify_resume_checkpoint`` refuses, before Lightning touches it, a checkpoint that is not a
lightstack checkpoint, comes from the other workload or stage, or from another architecture.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from lightstack.core.checkpoints import (
    CheckpointError,
    architecture_fingerprint,
    checkpoint_metadata,
    load_checkpoint,
)

ItemKey = tuple[int, int]
"""``(index, seed)``: what a sampler with ``item_seeds`` yields for ``SeededItems``."""


def default_seed() -> int:
    """The run's seed: what ``seed_everything`` set (``torch.initial_seed()`` after it), kept
    below 2**63 so that ``seed + epoch`` stays a valid generator seed."""
    return int(torch.initial_seed()) % 2**63


class ResumableSampler(DistributedSampler):
    """Training order of one epoch from ``(seed, epoch)`` alone, resumable mid-epoch.

    ``shuffle`` draws a permutation, ``weights`` draws ``size`` indices with replacement in
    proportion to the weights (task mixing), otherwise the order is ``0..size-1``. Like
    ``DistributedSampler`` (which it is, so Lightning does not wrap it again under DDP), the
    order is padded to a multiple of ``num_replicas`` and each rank takes every
    ``num_replicas``-th index. ``load_state_dict`` sets the epoch and the number of this rank's
    samples already trained; the next iteration yields only the rest.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        *,
        shuffle: bool = True,
        weights: Sequence[float] | torch.Tensor | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        item_seeds: bool = False,
    ):
        if size < 1:
            raise ValueError(f"ResumableSampler needs at least one sample, got size={size}")
        super().__init__(
            range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
        self.size = size
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        if self.weights is not None and self.weights.shape != (size,):
            raise ValueError(f"weights must have shape ({size},), got {tuple(self.weights.shape)}")
        self.item_seeds = item_seeds
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at every epoch start; a new epoch starts from its first sample."""
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def epoch_order(self) -> tuple[list[int], list[int]]:
        """This rank's indices of the current epoch and one seed per index."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=g)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        if self.total_size > self.size:  # pad like DistributedSampler (drop_last=False)
            repeats = math.ceil(self.total_size / self.size)
            order = order.repeat(repeats)[: self.total_size]
            seeds = seeds.repeat(repeats)[: self.total_size]
        step = self.num_replicas
        return order[self.rank :: step].tolist(), seeds[self.rank :: step].tolist()

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        indices, seeds = self.epoch_order()
        if self.item_seeds:
            return iter(list(zip(indices, seeds, strict=True))[skip:])
        return iter(indices[skip:])

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self, consumed: int = 0) -> dict[str, int]:
        """The position after ``consumed`` samples of this rank in the current epoch."""
        return {
            "epoch": self.epoch,
            "consumed": min(int(consumed), self.num_samples),
            "size": self.size,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the saved position; a finished epoch continues with the next one."""
        same = (state.get("size"), state.get("seed"), state.get("num_replicas")) == (
            self.size,
            self.seed,
            self.num_replicas,
        )
        if not same:
            warnings.warn(
                "the data loader position in the checkpoint is for another data set, seed or "
                f"number of processes ({state}); the interrupted epoch restarts from its first "
                "batch",
                stacklevel=2,
            )
            self.epoch, self.skip = int(state.get("epoch", 0)), 0
            return
        self.epoch, self.skip = int(state["epoch"]), int(state["consumed"])
        if self.skip >= self.num_samples:
            self.epoch, self.skip = self.epoch + 1, 0


class SeededItems(Dataset):
    """``dataset[index]`` with the Python, NumPy and torch CPU RNGs seeded per item.

    Keys are ``(index, seed)`` pairs from a ``ResumableSampler(item_seeds=True)``. The caller's
    RNG states are put back afterwards, so reading items in the main process (``num_workers=0``)
    does not disturb the training step's random stream.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: ItemKey) -> Any:
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ResumableDataModule(L.LightningDataModule):
    """A LightningDataModule whose training loader resumes mid-epoch at the exact batch.

    Build the training loader with ``resumable_loader``; the position goes into checkpoints
    through ``state_dict`` (called by Lightning when it saves) and comes back through
    ``load_state_dict`` (called before the loader is built when a run resumes).
    """

    def __init__(self) -> None:
        super().__init__()
        self._train_loader: DataLoader | None = None
        self._pending_position: dict[str, int] | None = None

    def resumable_loader(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        weights: Sequence[float] | torch.Tensor | None = None,
        item_seeds: bool = False,
        seed: int | None = None,
        **loader_kwargs: Any,
    ) -> DataLoader:
        """The training DataLoader over ``dataset`` with a ``ResumableSampler``.

        ``seed`` defaults to the run's (``default_seed``). The loader gets its own generator
        so creating its iterator draws nothing from the global RNG. ``loader_kwargs`` go to
        ``DataLoader`` (workers, pinning, ``collate_fn``, ...).
        """
        seed = default_seed() if seed is None else seed
        trainer = self.trainer
        sampler = ResumableSampler(
            len(dataset),  # type: ignore[arg-type]
            seed,
            shuffle=shuffle,
            weights=weights,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0,
            item_seeds=item_seeds,
        )
        if self._pending_position is not None:
            sampler.load_state_dict(self._pending_position)
            self._pending_position = None
        loader = DataLoader(
            SeededItems(dataset) if item_seeds else dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=torch.Generator().manual_seed(seed),
            **loader_kwargs,
        )
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        loader, trainer = self._train_loader, self.trainer
        if loader is None or trainer is None or not isinstance(loader.sampler, ResumableSampler):
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        consumed = batches * (loader.batch_size or 1)
        return {"train_position": loader.sampler.state_dict(consumed)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_position = state_dict.get("train_position")


def collect_rng_states() -> dict[str, Any]:
    """This process's RNG states in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, keys.tolist(), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    kind, keys, pos, has_gauss, cached = states["numpy"]
    random.setstate(_as_tuple(states["python"]))
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            warnings.warn(
                f"the checkpoint holds CUDA RNG states of {len(cuda)} devices but "
                f"{torch.cuda.device_count()} are visible; CUDA random streams are not restored",
                stacklevel=2,
            )


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants nested tuples; a checkpoint may give back lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


class RestoreRNG(Callback):
    """Keep every process's RNG states in checkpoints; restore them when training restarts.

    The states are gathered from all processes when a checkpoint is written (every rank writes
    its entry) and each rank gets its own back at ``on_train_start`` of the resumed run, after
    setup and any sanity validation, before the first training batch.
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        states = collect_rng_states()
        world = self._trainer.world_size if self._trainer is not None else 1
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, states)
            return {"per_rank": gathered}
        return {"per_rank": [states]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self._pending = self._pending, None
        if not pending:
            return
        per_rank = pending.get("per_rank", [])
        if len(per_rank) != trainer.world_size:
            warnings.warn(
                f"the checkpoint holds RNG states of {len(per_rank)} processes but this run has "
                f"{trainer.world_size}; random streams are not restored, so the resumed run is "
                "not bit-identical to an uninterrupted one",
                stacklevel=2,
            )
            return
        set_rng_states(per_rank[trainer.global_rank])


def verify_resume_checkpoint(
    path: str | Path, family: str, module: L.LightningModule
) -> dict[str, Any]:
    """Check that training can resume from ``path`` with ``module``; return its metadata.

    Raises ``CheckpointError`` naming the file when it is not a lightstack checkpoint (or
    needs arbitrary unpickling), was written by another workload or stage, holds another
    architecture, or has no optimizer state (a converted, weights-only file).
    """
    ckpt = load_checkpoint(path, mmap=True)
    meta = checkpoint_metadata(ckpt, path, family)
    stage = getattr(module, "stage", None)
    if stage is not None and meta.get("stage") != stage:
        raise CheckpointError(
            f"{path} is a checkpoint of the {meta.get('stage')!r} stage; this run trains "
            f"{stage!r}. Resume from a checkpoint of the same stage (--resume never starts over)"
        )
    model = getattr(module, "model", None)
    expected = meta.get("fingerprint")
    if isinstance(model, torch.nn.Module) and expected is not None:
        found = architecture_fingerprint(model)
        if found != expected:
            raise CheckpointError(
                f"{path} holds another architecture (fingerprint {expected}) than this run's "
                f"model config builds ({found}); resume with the config the checkpoint was "
                "trained with, or start over with --resume never"
            )
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"{path} holds weights only (no optimizer and loop state), so training cannot "
            "resume from it; start a new run from its weights instead"
        )
    return meta
