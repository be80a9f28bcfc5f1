"""Video run configuration: the MVFoul data, the multi-view model, loss, augmentation, freezing,
EMA and evaluation sections on top of the shared ``RunConfig``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lightstack.core.callbacks.freezing import FreezingConfig
from lightstack.core.config import CheckpointConfig, RunConfig, Section
from lightstack.video.augment import AugmentConfig
from lightstack.video.data.mvfoul import VideoDataConfig
from lightstack.video.losses import LossConfig
from lightstack.video.models.multiview import VideoModelConfig, check_clip_shape

DEFAULT_MONITOR = "val/leaderboard"


class VideoCheckpointConfig(CheckpointConfig):
    """Checkpoints follow the leaderboard value (higher is better) unless told otherwise."""

    monitor: str | None = DEFAULT_MONITOR
    mode: Literal["min", "max"] = "max"


class EvalConfig(Section):
    """``eval:`` section: scoring after training and the defaults of ``video predict``."""

    after_fit: bool = Field(
        True,
        description="predict the test split with the best checkpoint after training and score "
        "it with the challenge rules (skipped when the split folder does not exist)",
    )
    batch_size: int | None = Field(None, ge=1, description="default: data.batch_size")
    num_workers: int | None = Field(None, ge=0, description="default: data.num_workers")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    confusion_matrices: bool = True


class VideoConfig(RunConfig):
    """A video run.

    EMA of the weights is switched on with ``model.ema`` (decay ``model.ema_decay``): validation
    then scores the EMA weights, and checkpoints hold them in ``state_dict`` with the raw weights
    beside them in ``current_model_state``.
    """

    family: Literal["video"] = "video"
    data: VideoDataConfig = VideoDataConfig()
    model: VideoModelConfig = VideoModelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    freezing: FreezingConfig = FreezingConfig()
    eval: EvalConfig = EvalConfig()
    checkpoint: VideoCheckpointConfig = VideoCheckpointConfig()

    @model_validator(mode="after")
    def _sections_agree(self) -> VideoConfig:
        check_clip_shape(self.model.backbone, (self.data.frames, *self.data.size))
        if self.model.aggregation == "transformer" and self.data.max_views > self.model.max_views:
            raise ValueError(
                f"data.max_views ({self.data.max_views}) exceeds model.max_views "
                f"({self.model.max_views}), the view embeddings of the transformer aggregation"
            )
        if self.augment.severity_aware and len(self.augment.per_class_strength) < (
            self.model.num_offence
        ):
            raise ValueError(
                f"augment.per_class_strength has {len(self.augment.per_class_strength)} entries; "
                f"severity_aware needs one per offence class ({self.model.num_offence})"
            )
        return self
