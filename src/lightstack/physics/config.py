"""Physics run configuration: data, surrogate model, losses, evaluation and gates."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from lightstack.core.config import DataLoaderConfig, RunConfig, Section

Stage = Literal["operator", "diff_residual", "consistency_distill", "steady_prior"]


class PhysicsDataConfig(Section):
    """Where trajectories come from and how they are split, strided and batched."""

    train_files: list[str] = Field(default_factory=list)
    val_files: list[str] = Field(default_factory=list)
    test_files: list[str] = Field(default_factory=list)
    task_names: list[str] | None = Field(
        None, description="one name per training file (default: the file stem)"
    )
    reduced_resolution: int = Field(1, ge=1, description="spatial stride, as in PDEBench")
    reduced_resolution_t: int = Field(1, ge=1, description="time stride, as in PDEBench")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="of training samples, if no val_files")
    test_fraction: float = Field(
        0.1, ge=0, lt=1, description="of training samples, if no test_files"
    )
    split_seed: int = 0
    max_samples: int | None = Field(
        None, ge=1, description="use at most this many samples per file"
    )
    param_keys: list[str] = Field(
        default_factory=list, description="file attributes fed to the model as PDE parameters"
    )
    stats_samples: int = Field(64, ge=1, description="samples used for normalisation statistics")
    loader: DataLoaderConfig = DataLoaderConfig()

    @model_validator(mode="after")
    def _names_match_files(self) -> PhysicsDataConfig:
        if self.task_names is not None and len(self.task_names) != len(self.train_files):
            raise ValueError(
                f"task_names has {len(self.task_names)} entries but train_files has "
                f"{len(self.train_files)}"
            )
        return self


class SurrogateConfig(Section):
    """Encoder -> latent operator -> any-point decoder. ``None`` fields are filled from the data."""

    width: int = Field(64, ge=8)
    heads: int = Field(4, ge=1)
    patch_size: int = Field(8, ge=1)
    encoder_depth: int = Field(1, ge=0)
    operator_depth: int = Field(4, ge=1)
    decoder_depth: int = Field(1, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)
    fourier_features: int | None = Field(
        None,
        ge=1,
        description="octaves of sin/cos coordinate features (default: log2 of the largest grid "
        "axis, so the finest feature matches the grid's resolution and nothing aliases between "
        "grid points)",
    )
    dropout: float = Field(0.0, ge=0, lt=1)
    channels: int | None = Field(None, ge=1)
    spatial_shape: list[int] | None = None
    n_params: int = Field(0, ge=0)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SurrogateConfig:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.spatial_shape is not None:
            bad = [n for n in self.spatial_shape if n % self.patch_size]
            if bad:
                raise ValueError(
                    f"spatial_shape {self.spatial_shape} is not divisible by patch_size "
                    f"{self.patch_size}"
                )
        return self

    @property
    def octaves(self) -> int:
        if self.fourier_features is not None:
            return self.fourier_features
        return max(1, math.ceil(math.log2(max(self.spatial_shape or [2]))))


class OperatorLossConfig(Section):
    """Loss terms of the operator stage, each logged as ``train/L_<name>``."""

    rollout_horizon: int = Field(2, ge=1, description="latent steps unrolled in training")
    onestep: float = Field(1.0, ge=0)
    rollout: float = Field(1.0, ge=0)
    recon: float = Field(1.0, ge=0)
    spectral: float = Field(0.0, ge=0)
    autoencoder_warmup_epochs: int = Field(0, ge=0, description="train only recon first")
    query_points: int | None = Field(
        None,
        ge=1,
        description="decode this many random grid points per step in training (None: all); "
        "the decoder works at any point, so a random subset is an unbiased, cheaper loss",
    )

    @model_validator(mode="after")
    def _spectral_needs_full_grid(self) -> OperatorLossConfig:
        if self.spectral > 0 and self.query_points is not None:
            raise ValueError("the spectral loss needs the full grid: set query_points to null")
        return self


class EvalConfig(Section):
    horizons: list[int] = Field(default_factory=lambda: [1, 4, 16])
    correlation_thresholds: list[float] = Field(default_factory=lambda: [0.8, 0.9, 0.95])
    batch_size: int = Field(16, ge=1)
    plot_samples: int = Field(3, ge=0)


class GenerateConfig(Section):
    """Data set the quickstart generates before training (``lightstack physics generate``)."""

    equation: Literal["burgers1d", "advection1d", "diffreact1d", "ns2d", "darcy2d"] = "burgers1d"
    samples: int = Field(64, ge=1)
    seed: int = 0
    params: dict[str, float | int] = Field(default_factory=dict)


class PhysicsConfig(RunConfig):
    family: Literal["physics"] = "physics"
    stage: Stage = "operator"
    data: PhysicsDataConfig = PhysicsDataConfig()
    model: SurrogateConfig = SurrogateConfig()
    loss: OperatorLossConfig = OperatorLossConfig()
    eval: EvalConfig = EvalConfig()
    generate: GenerateConfig | None = None
