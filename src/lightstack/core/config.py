"""Typed run configuration: YAML + dotted overrides -> validated, frozen pydantic objects.

Each family (physics, video) defines its own ``RunConfig`` subclass with ``data`` and ``model``
sections; the sections shared by both (trainer, optimizer, checkpoint, logging, training) live
here. Unknown keys are errors and every invalid field is reported at once with its dotted path.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration that cannot be loaded; ``errors`` lists ``(dotted.path, message)``."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = [f"{path}: {msg}" if path else msg for path, msg in errors]
        super().__init__(f"invalid configuration {source}:\n  " + "\n  ".join(lines))


class Section(BaseModel):
    """Base of every config section: frozen, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


Precision = Literal["32", "32-true", "16-mixed", "bf16-mixed", "bf16-true", "64", "64-true"]


FSDPShardingStrategy = Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"]


class FSDPConfig(Section):
    """``trainer.fsdp``: used with ``trainer.strategy=fsdp`` only.

    The model's blocks (``fsdp_wrap_modules()`` of the LightningModule) are the FSDP units;
    ``activation_checkpointing`` recomputes their activations in the backward pass and
    ``cpu_offload`` keeps parameters, gradients and optimizer state in host memory.
    """

    activation_checkpointing: bool = False
    cpu_offload: bool = False
    sharding_strategy: FSDPShardingStrategy = "FULL_SHARD"


class TrainerConfig(Section):
    """What ``lightning.Trainer`` is built with (see ``core.trainer.build_trainer``)."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp"] = (
        "auto"
    )
    precision: Precision = "32-true"
    max_epochs: int = Field(10, ge=-1)
    max_steps: int = Field(-1, ge=-1)
    max_time: str | None = Field(None, description="DD:HH:MM:SS wall-clock limit")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads on the CPU; null: one per available core"
    )
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, ge=0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    deterministic: bool = False
    sync_batchnorm: bool = False
    check_val_every_n_epoch: int = Field(1, ge=1)
    val_check_interval: float | int | None = None
    limit_train_batches: float | int | None = None
    limit_val_batches: float | int | None = None
    log_every_n_steps: int = Field(10, ge=1)
    num_sanity_val_steps: int = Field(0, ge=-1)
    fsdp: FSDPConfig = FSDPConfig()

    @model_validator(mode="after")
    def _fp16_needs_gpu(self) -> TrainerConfig:
        if self.precision == "16-mixed" and self.accelerator == "cpu":
            raise ValueError(
                "precision '16-mixed' needs a GPU; on CPU use 'bf16-mixed' or '32-true'"
            )
        return self

    @model_validator(mode="after")
    def _fsdp_fields_need_fsdp(self) -> TrainerConfig:
        if self.strategy != "fsdp" and self.fsdp != FSDPConfig():
            raise ValueError(
                f"trainer.fsdp is set but trainer.strategy is {self.strategy!r}; "
                "set trainer.strategy=fsdp or remove trainer.fsdp"
            )
        return self


class SchedulerConfig(Section):
    name: Literal["none", "cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class OptimizerConfig(Section):
    name: Literal["adamw", "muon"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    muon_lr: float = Field(0.02, gt=0, description="LR of the Muon group (2-D hidden weights)")
    cpu_offload: bool = Field(
        False,
        description="keep parameters, gradients and optimizer state in host memory and step "
        "the optimizer there (FSDP CPU offload; needs trainer.strategy=fsdp)",
    )
    scheduler: SchedulerConfig = SchedulerConfig()


class CheckpointConfig(Section):
    """Fields passed to Lightning's ``ModelCheckpoint`` (monitor defaults per family)."""

    monitor: str | None = None
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(1, ge=-1)
    save_last: bool = True
    every_n_train_steps: int | None = Field(None, ge=1)
    every_n_epochs: int | None = Field(None, ge=1)


class EarlyStoppingConfig(Section):
    enabled: bool = False
    patience: int = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)


class LoggingConfig(Section):
    loggers: list[Literal["csv", "tensorboard", "wandb"]] = ["csv", "tensorboard"]
    progress_bar: Literal["rich", "tqdm", "none"] = "rich"
    wandb_project: str = "lightstack"
    wandb_offline: bool = True


class ProfileScheduleConfig(Section):
    """``torch.profiler.schedule`` of the ``pytorch`` profiler, in training steps."""

    wait: int = Field(1, ge=0)
    warmup: int = Field(1, ge=0)
    active: int = Field(3, ge=1)
    repeat: int = Field(1, ge=0, description="cycles to record (0: until training ends)")


class MemoryCleanupConfig(Section):
    """Empty the CUDA cache and collect garbage at these points; logs ``mem/freed_gb``."""

    enabled: bool = False
    points: list[Literal["train_epoch_end", "validation_end"]] = ["train_epoch_end"]
    every_n_train_steps: int | None = Field(None, ge=1)


class OOMRecoveryConfig(Section):
    """On CUDA out-of-memory: smaller micro-batch, more accumulation, same effective batch."""

    enabled: bool = False
    min_batch_size: int = Field(1, ge=1, description="give up below this micro-batch")
    max_retries: int = Field(4, ge=1)


class TuneConfig(Section):
    """``--tune-batch-size`` / ``--tune-lr``: Lightning's Tuner before training."""

    batch_size: bool = False
    lr: bool = False
    batch_size_mode: Literal["binsearch", "power"] = "binsearch"
    steps_per_trial: int = Field(3, ge=1)
    max_trials: int = Field(10, ge=1)
    max_batch_size: int = Field(8192, ge=1)
    lr_min: float = Field(1e-7, gt=0)
    lr_max: float = Field(1.0, gt=0)
    lr_steps: int = Field(100, ge=2, description="learning rates tried by the LR finder")

    @model_validator(mode="after")
    def _lr_range(self) -> TuneConfig:
        if self.lr_min >= self.lr_max:
            raise ValueError(f"lr_min ({self.lr_min}) must be below lr_max ({self.lr_max})")
        return self


class NaNGuardConfig(Section):
    """A NaN/Inf loss or gradient: skip that optimizer step (at most ``max_skips`` times in a
    run, each one logged as ``train/nan_skipped_steps``) or stop the run naming the step."""

    enabled: bool = True
    action: Literal["skip", "stop"] = "stop"
    max_skips: int = Field(10, ge=0, description="skipped steps allowed before the run stops")


class TrainingConfig(Section):
    skip_lightning_val: bool = False
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    profile: Literal["none", "simple", "advanced", "pytorch"] = "none"
    profile_schedule: ProfileScheduleConfig = ProfileScheduleConfig()
    force_compile: bool = Field(
        False, description="compile even where a guard of core.compile.COMPILE_GUARDS fires"
    )
    memory_cleanup: MemoryCleanupConfig = MemoryCleanupConfig()
    oom_recovery: OOMRecoveryConfig = OOMRecoveryConfig()
    tune: TuneConfig = TuneConfig()
    nan_guard: NaNGuardConfig = NaNGuardConfig()


class DataLoaderConfig(Section):
    batch_size: int = Field(16, ge=1)
    num_workers: int = Field(0, ge=0)
    prefetch_factor: int | None = Field(None, ge=1)
    pin_memory: bool = False
    persistent_workers: bool = False

    def worker_options(self) -> dict[str, Any]:
        """The ``DataLoader`` arguments of these settings but the batch size; persistent
        workers and prefetching apply only where there are workers."""
        workers = self.num_workers
        return {
            "num_workers": workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers and workers > 0,
            "prefetch_factor": self.prefetch_factor if workers > 0 else None,
        }


class RunConfig(Section):
    """Sections every run has; families subclass it and add ``data``, ``model`` and the rest."""

    family: str
    name: str = "run"
    seed: int = 0
    trainer: TrainerConfig = TrainerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    training: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _optimizer_fits_strategy(self) -> RunConfig:
        strategy = self.trainer.strategy
        if self.optimizer.cpu_offload and strategy != "fsdp":
            raise ValueError(
                f"optimizer.cpu_offload uses FSDP's CPU offload but trainer.strategy is "
                f"{strategy!r}; set trainer.strategy=fsdp"
            )
        if self.optimizer.name == "muon" and strategy == "fsdp":
            raise ValueError(
                "optimizer.name=muon needs whole weight matrices but trainer.strategy=fsdp shards "
                "them; use strategy ddp with muon, or adamw with fsdp"
            )
        return self


C = TypeVar("C", bound=RunConfig)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, raising ``ConfigError`` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [("", "file not found")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [("", f"malformed YAML: {exc}")]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [("", f"expected a mapping at top level, got {type(data).__name__}")]
        )
    return data


def merge_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) on top of ``data``."""
    bad = [o for o in overrides if "=" not in o or not o.split("=", 1)[0].strip()]
    if bad:
        raise ConfigError(
            source, [("", f"override {o!r} is not of the form key.path=value") for o in bad]
        )
    try:
        base = OmegaConf.create(data)
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]
    except (OmegaConfBaseException, yaml.YAMLError) as exc:  # values are parsed as YAML
        raise ConfigError(source, [("", f"bad override or interpolation: {exc}")]) from exc


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation can hold (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _fields_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Field names of the section at ``loc`` (a pydantic error location) in ``schema``."""
    models = [schema]
    for key in loc:
        inner = [
            model
            for section in models
            if key in section.model_fields
            for model in _models_in(section.model_fields[key].annotation)
        ]
        models = inner or models  # list indices and union tags stay in the same section
    return {name for model in models for name in model.model_fields}


def _unknown_key(schema: type[BaseModel], loc: tuple[Any, ...]) -> str:
    msg = "unknown key (not a field of this section)"
    close = difflib.get_close_matches(str(loc[-1]), sorted(_fields_at(schema, loc[:-1])), n=1)
    return f"{msg}; did you mean {close[0]}?" if close else msg


def _format_errors(exc: ValidationError, schema: type[BaseModel]) -> list[tuple[str, str]]:
    errors = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = _unknown_key(schema, err["loc"])
        elif err["type"] == "missing":
            msg = "required field is missing"
        errors.append((path, msg))
    return errors


def validate(schema: type[C], data: dict[str, Any], source: str) -> C:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc, schema)) from exc


def load_config(path: str | Path, overrides: list[str] | None, schema: type[C]) -> C:
    """Load ``path``, apply dotted ``overrides`` and validate against ``schema``."""
    data = merge_overrides(read_yaml(path), list(overrides or []), str(path))
    return validate(schema, data, str(path))


def apply_updates(cfg: C, updates: dict[str, Any]) -> C:
    """A copy of ``cfg`` with dotted-path ``updates`` (``{"optimizer.lr": 3e-4}``), validated."""
    data = to_dict(cfg)
    for dotted, value in updates.items():
        node: Any = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node, dict) or key not in node:
                raise ConfigError("updates", [(dotted, "no such section in the configuration")])
            node = node[key]
        node[leaf] = value
    return validate(type(cfg), data, "updates")


def loader_section(cfg: BaseModel) -> str:
    """Dotted path of the run's ``DataLoaderConfig`` (``data.loader`` for physics, ``data`` for
    video), where ``batch_size`` and the worker settings live."""

    def find(section: BaseModel, path: str) -> str | None:
        if isinstance(section, DataLoaderConfig):
            return path
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, BaseModel):
                found = find(value, f"{path}.{name}" if path else name)
                if found:
                    return found
        return None

    found = find(cfg, "")
    if not found:
        raise ValueError(f"{type(cfg).__name__} has no data loader section (DataLoaderConfig)")
    return found


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """Plain-Python (YAML/JSON/checkpoint safe) view of a config."""
    return cfg.model_dump(mode="json")


def save_config(cfg: BaseModel, path: str | Path) -> None:
    from lightstack.core.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
