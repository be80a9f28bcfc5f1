"""The ``freezing:`` config section (kept free of torch and Lightning imports)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lightstack.core.config import Section

Strategy = Literal["none", "progressive", "adaptive", "gradient_guided"]


class FreezingConfig(Section):
    """``freezing:`` section: which backbone blocks train when."""

    strategy: Strategy = "none"
    frozen_blocks: int | None = Field(
        None, ge=0, description="blocks frozen at the start, counted from the input; None = all"
    )
    start_epoch: int = Field(1, ge=1, description="first epoch at which blocks may unfreeze")
    every_n_epochs: int = Field(1, ge=1)
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.0, ge=0.0)
    top_k: int = Field(1, ge=1, description="blocks unfrozen per trigger")
    unfreeze_lr_factor: float = Field(0.1, gt=0.0)
