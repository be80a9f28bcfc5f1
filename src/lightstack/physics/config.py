"""Physics run configuration: data, surrogate model, losses, evaluation and gates."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from lightstack.core.config import DataLoaderConfig, RunConfig, Section

Stage = Literal["operator", "diff_residual", "consistency_distill", "steady_prior", "fno"]
# Stages whose models take ``data.initial_step`` snapshots; the correctors work on the latent of
# one snapshot and the steady prior has no time axis.
HISTORY_STAGES: tuple[Stage, ...] = ("operator", "fno")


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
    initial_step: int = Field(
        1,
        ge=1,
        description="input snapshots per prediction, PDEBench's initial_step: models see the last "
        "initial_step snapshots (stacked on channels, oldest first) and metrics count only the "
        "steps after them",
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="of training samples, if no val_files")
    test_fraction: float = Field(
        0.1, ge=0, lt=1, description="of training samples, if no test_files"
    )
    split_seed: int = 0
    split: Literal["random", "pdebench"] = Field(
        "random",
        description="random: val/test fractions drawn with split_seed; pdebench: PDEBench's "
        "split (test_fraction as its test_ratio; single-array files test on the first samples, "
        "seed-group files on the last; validation runs on the test samples, as PDEBench's does)",
    )
    max_samples: int | None = Field(
        None, ge=1, description="use at most this many samples per file"
    )
    param_keys: list[str] = Field(
        default_factory=list, description="file attributes fed to the model as PDE parameters"
    )
    stats_samples: int = Field(64, ge=1, description="samples used for normalisation statistics")
    task_weights: dict[str, Annotated[float, Field(ge=0)]] | None = Field(
        None, description="task name -> sampling weight of its training windows (default: uniform)"
    )
    resident: bool = Field(
        False,
        description="keep the training split on the training device as one tensor and cut "
        "batches there (no loader workers, collation or host-to-device copies); for training "
        "sets that fit in device memory",
    )
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
    initial_step: int = Field(
        1, ge=1, description="input snapshots the encoder takes (filled from data.initial_step)"
    )
    predict_increment: bool = Field(
        False,
        description="predictions are the last input snapshot plus the decoded change since it, "
        "u_t + D(z_t+k) - D(z_t), so the autoencoder's reconstruction error of u_t cancels "
        "(operator stage)",
    )
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

    def check_data_shapes(self) -> None:
        """Raise unless the fields that come from the data have been filled in."""
        if self.channels is None or self.spatial_shape is None:
            raise ValueError(
                "model.channels and model.spatial_shape must be set (they are filled from the data)"
            )

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
    latent: float = Field(
        1.0,
        ge=0,
        description="latent prediction loss: each unrolled latent state against the encoding of "
        "the true snapshot (a stop-gradient target)",
    )
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


class GateSpec(Section):
    """Bounds one metric must stay within (``gates: {val/nrmse: {max: 0.05}}``)."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> GateSpec:
        if self.min is None and self.max is None:
            raise ValueError("a gate needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate min ({self.min}) is larger than its max ({self.max})")
        return self


class ChampionConfig(Section):
    """When an evaluated run replaces the leaderboard's champion of its task set."""

    metric: str = Field("rollout_nrmse", description="main metric (see docs/physics_pipeline.md)")
    mode: Literal["min", "max"] = "min"
    margin: float = Field(
        0.02, ge=0, lt=1, description="relative improvement of the main metric needed to promote"
    )
    max_ratios: dict[str, float] = Field(
        default_factory=lambda: {"mass_drift": 1.5, "train_wall_s": 2.0},
        description="secondary metrics (lower is better): promoted only if candidate <= ratio x "
        "champion; a metric missing on either side is not compared",
    )
    leaderboard: str | None = Field(
        None, description="CSV shared by runs (default: leaderboard.csv beside the run directory)"
    )


class PipelineConfig(Section):
    """``physics pipeline``: stages trained in order, each starting from the previous checkpoint."""

    stages: list[Stage] = Field(
        default_factory=lambda: ["operator", "diff_residual", "consistency_distill", "steady_prior"]
    )
    stage_overrides: dict[Stage, dict[str, Any]] = Field(
        default_factory=dict,
        description="config fields replaced for one stage only, e.g. "
        "{diff_residual: {trainer: {max_epochs: 5}}} (ignored for stages not listed)",
    )
    eval_stage: Stage | None = Field(
        None, description="stage whose checkpoint is evaluated (default: last one with rollouts)"
    )
    small_eval_trajectories: int = Field(
        8, ge=1, description="test trajectories of the quick check that runs the gates first"
    )

    @model_validator(mode="after")
    def _stages_consistent(self) -> PipelineConfig:
        if not self.stages:
            raise ValueError("stages is empty: name at least one stage")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages {self.stages} names a stage twice")
        if self.eval_stage is not None and self.eval_stage not in self.stages:
            raise ValueError(f"eval_stage {self.eval_stage!r} is not in stages {self.stages}")
        return self


class LatentCacheConfig(Section):
    """Encoded latents kept on disk so later stages can train without running the encoder."""

    enabled: bool = Field(
        False,
        description="diff_residual and consistency_distill train on cached latents (no encoder "
        "in training steps); off by default because it writes the encoded training split to "
        "disk",
    )
    root: str = Field("runs/latent_cache", description="folder holding one entry per cache key")
    dtype: Literal["float32", "float16"] = "float32"
    batch_size: int = Field(16, ge=1, description="trajectories encoded at once")


class DiffusionConfig(Section):
    """Stage ``diff_residual``: the latent residual denoiser, its noise schedule and sampler.

    ``refiner`` is PDE-Refiner's schedule: ``train_timesteps`` noise levels whose variances fall
    geometrically from 1 (pure noise: the first step predicts the residual outright) to
    ``min_noise_std**2``, so the remaining steps refine ever finer detail. ``cosine`` is the
    usual DDPM cosine schedule, for many-step models.
    """

    width: int = Field(64, ge=8, description="denoiser width (latent tokens are projected to it)")
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(2.0, gt=0)
    prediction: Literal["v_prediction", "epsilon"] = "v_prediction"
    schedule: Literal["refiner", "cosine"] = "refiner"
    train_timesteps: int = Field(4, ge=2, description="noise levels of the schedule")
    min_noise_std: float = Field(
        0.01, gt=0, lt=1, description="refiner: noise std of the lowest level (residual units)"
    )
    top_level_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of training samples at the top noise level (the rest spread evenly)",
    )
    sampler: Literal["ddim", "ddpm"] = "ddim"
    sample_steps: int | None = Field(
        None, ge=1, description="sampler steps per latent step (default: train_timesteps)"
    )
    stats_batches: int = Field(
        8, ge=1, description="training batches that estimate the residual scale"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionConfig:
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if self.schedule == "refiner" and self.prediction == "epsilon":
            raise ValueError(
                "the refiner schedule starts from pure noise, where epsilon prediction cannot "
                "recover the residual: use prediction 'v_prediction'"
            )
        steps = self.steps
        if steps > self.train_timesteps or self.train_timesteps % steps:
            raise ValueError(
                f"sample_steps ({steps}) must divide train_timesteps ({self.train_timesteps})"
            )
        return self

    @property
    def steps(self) -> int:
        return self.sample_steps or self.train_timesteps


class ConsistencyConfig(Section):
    """Stage ``consistency_distill``: consistency distillation of the diffusion residual."""

    ema_decay: float = Field(0.95, ge=0, lt=1, description="decay of the EMA target network")
    levels: int | None = Field(
        None,
        ge=2,
        description="noise levels of the distillation grid, a subset of the teacher's "
        "(default: all of the teacher's train_timesteps)",
    )
    sample_steps: int = Field(1, ge=1, description="student steps in validation and rollouts")

    @model_validator(mode="after")
    def _steps_fit(self) -> ConsistencyConfig:
        if self.levels is not None and self.sample_steps > self.levels:
            raise ValueError(
                f"sample_steps ({self.sample_steps}) exceeds the {self.levels} levels of the grid"
            )
        return self


class SteadyConfig(Section):
    """Stage ``steady_prior``: coefficient field -> latent -> latent of the solution -> decode."""

    depth: int = Field(4, ge=1, description="transformer blocks between the two latents")
    query_points: int | None = Field(
        None, ge=1, description="random grid points decoded per sample in training (None: all)"
    )


class FNOConfig(Section):
    """Stage ``fno``: neuraloperator's Fourier neural operator as a one-step baseline.

    Needs the ``[baselines]`` extra. The grid coordinates (and any PDE parameters) are extra
    input channels, as in PDEBench's FNO. ``modes`` counts as neuraloperator's ``n_modes``
    does: wavenumbers up to about ``modes / 2`` in size, so the last axis keeps
    ``modes // 2 + 1`` coefficients of its real FFT (PDEBench's FNO counts those coefficients).
    """

    modes: int = Field(32, ge=2, description="Fourier modes per axis, neuraloperator's n_modes")
    width: int = Field(64, ge=1, description="hidden channels")
    layers: int = Field(4, ge=1, description="Fourier layers")
    steady: bool = Field(
        False,
        description="learn the steady coefficient -> solution map of Darcy files (the "
        "steady_prior stage's task) instead of a time step",
    )


class PhysicsConfig(RunConfig):
    family: Literal["physics"] = "physics"
    stage: Stage = "operator"
    data: PhysicsDataConfig = PhysicsDataConfig()
    model: SurrogateConfig = SurrogateConfig()
    loss: OperatorLossConfig = OperatorLossConfig()
    eval: EvalConfig = EvalConfig()
    generate: GenerateConfig | None = None
    init_from: str | None = Field(
        None, description="checkpoint of the stage this one starts from (diff_residual: operator)"
    )
    diffusion: DiffusionConfig = DiffusionConfig()
    consistency: ConsistencyConfig = ConsistencyConfig()
    steady: SteadyConfig = SteadyConfig()
    fno: FNOConfig = FNOConfig()
    gates: dict[str, GateSpec | None] = Field(
        default_factory=dict, description="metric name -> bounds; null switches a gate off"
    )
    champion: ChampionConfig = ChampionConfig()
    pipeline: PipelineConfig = PipelineConfig()
    cache: LatentCacheConfig = LatentCacheConfig()

    @model_validator(mode="after")
    def _increment_supported(self) -> PhysicsConfig:
        if self.model.predict_increment and self.stage != "operator":
            raise ValueError(
                f"model.predict_increment is an operator-stage option; stage {self.stage!r} "
                "decodes latents directly (set model.predict_increment=false)"
            )
        return self

    @model_validator(mode="after")
    def _history_supported(self) -> PhysicsConfig:
        steady = self.stage == "steady_prior" or (self.stage == "fno" and self.fno.steady)
        if self.data.initial_step > 1 and (steady or self.stage not in HISTORY_STAGES):
            raise ValueError(
                f"data.initial_step={self.data.initial_step}: stage {self.stage!r} takes one input "
                f"snapshot; only {', '.join(HISTORY_STAGES)} take a history (set "
                "data.initial_step=1)"
            )
        return self
