"""SoccerNet MVFoul data for a run: the ``data`` config section and the LightningDataModule.

Decoding lives in ``decode``, the split dataset in ``dataset``, batching in ``collate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch.utils.data import DataLoader

from lightstack.core.config import DataLoaderConfig
from lightstack.core.resume import ResumableDataModule
from lightstack.video.data.collate import collate_views
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import SOURCE_FPS
from lightstack.video.labels import OFFENCE_CLASSES


class VideoDataConfig(DataLoaderConfig):
    """The ``data`` section of a video run: where the MVFoul tree is and how clips are read.

    ``start``/``end``/``fps`` are in the 25 fps time base of real clips (defaults: VARS's 16
    frames around the foul); for synthetic clips use ``start: 0``, ``end: <frames>``, ``fps: 25``.
    ``decode_threads`` is per DataLoader worker: keep 1 when ``num_workers`` is about the number
    of cores, raise it (or 0: FFmpeg's choice) when fewer workers should use more cores.
    """

    root: Path = Path("data/mvfoul")
    train_split: str = "train"
    val_split: str = "valid"
    test_split: str = "test"
    frames: int = Field(16, ge=1)
    start: int = Field(63, ge=0)
    end: int = Field(87, ge=1)
    fps: float = Field(17.0, gt=0, le=SOURCE_FPS)
    size: tuple[int, int] = (224, 224)
    views_per_sample_train: int | None = Field(2, ge=1)
    max_views: int = Field(4, ge=1)
    batch_size: int = Field(4, ge=1)
    balanced_sampler: bool = False
    max_skip_fraction: float = Field(0.1, ge=0, le=1)
    probe_clips: bool = True
    decode_threads: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check(self) -> VideoDataConfig:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        if min(self.size) < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.views_per_sample_train is not None and self.views_per_sample_train > self.max_views:
            raise ValueError(
                f"views_per_sample_train ({self.views_per_sample_train}) exceeds "
                f"max_views ({self.max_views})"
            )
        return self


class MVFoulDataModule(ResumableDataModule):
    """Train/valid/test MVFoul datasets and loaders built from a ``VideoDataConfig``.

    Training draws ``views_per_sample_train`` random views per action, shuffles, and with
    ``balanced_sampler`` samples actions with replacement at inverse offence/severity class
    frequency. Evaluation reads all views; ``predict`` uses the test split.
    """

    def __init__(self, cfg: VideoDataConfig):
        super().__init__()
        self.cfg = cfg
        # Batch size of the loaders; the batch-size tuner and OOM recovery change it.
        self.batch_size = cfg.batch_size
        self.datasets: dict[str, MVFoulDataset] = {}

    def dataset(self, role: Literal["train", "val", "test"]) -> MVFoulDataset:
        """The dataset of one role, built on first use."""
        if role not in self.datasets:
            cfg = self.cfg
            split = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}[role]
            self.datasets[role] = MVFoulDataset(
                cfg.root / split,
                frames=cfg.frames,
                start=cfg.start,
                end=cfg.end,
                fps=cfg.fps,
                size=cfg.size,
                views_per_sample=cfg.views_per_sample_train if role == "train" else None,
                max_views=cfg.max_views,
                max_skip_fraction=cfg.max_skip_fraction,
                probe=cfg.probe_clips,
                decode_threads=cfg.decode_threads,
            )
        return self.datasets[role]

    def setup(self, stage: str) -> None:
        roles = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for role in roles.get(stage, ("test",)):
            self.dataset(role)  # type: ignore[arg-type]

    def class_counts(self) -> dict[str, torch.Tensor]:
        """Training-set items per class (for class-weighted losses)."""
        return self.dataset("train").class_counts()

    def _loader_options(self) -> dict[str, Any]:
        return self.cfg.worker_options() | {"collate_fn": collate_views}

    def _loader(self, dataset: MVFoulDataset, **kwargs: Any) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, **self._loader_options(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or offence-balanced) actions; resumable mid-epoch, views seeded per item."""
        dataset = self.dataset("train")
        weights = None
        if self.cfg.balanced_sampler:
            labels = dataset.targets("offence")
            counts = torch.bincount(labels, minlength=len(OFFENCE_CLASSES)).clamp_(min=1)
            weights = (1.0 / counts.double())[labels]
        return self.resumable_loader(
            dataset, self.batch_size, weights=weights, item_seeds=True, **self._loader_options()
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), shuffle=False)
