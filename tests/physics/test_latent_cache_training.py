"""diff_residual and consistency_distill training from the latent cache (no encoder in steps)."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from lightstack.core.checkpoints import load_checkpoint
from lightstack.core.resume import ResumableSampler
from lightstack.core.trainer import FitResult
from lightstack.physics import stages
from lightstack.physics.data.latent_datamodule import LatentCacheDataModule
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.train import train, with_data_shapes

torch.set_num_threads(1)

SMALL = ("data.max_samples=16", "trainer.max_epochs=1", "trainer.limit_train_batches=4")
DENOISER = ("diffusion.width=32", "diffusion.depth=2", "diffusion.heads=2")
BATCH_KEYS = {"latents", "dt", "params", "task"}


@dataclass
class Traced:
    """A fit through ``train`` with the encoder's forward calls counted by phase."""

    result: FitResult
    dm: PDEDataModule
    encoder_calls: Counter
    steps: int
    batch_keys: set[str]

    @property
    def metric(self) -> float:
        return self.result.metrics["val/nrmse"]


def traced_train(
    mp: pytest.MonkeyPatch, cfg: Any, run_dir: Path, fail_at: int | None = None
) -> Traced:
    """``train(cfg)``, counting encoder calls in the cache build, in training steps and
    elsewhere (validation), and the training steps and the keys of their batches. With
    ``fail_at`` the training step of that global step raises (an interrupted run)."""
    calls: Counter = Counter()
    phase = ["other"]
    seen: dict[str, Any] = {"steps": 0, "keys": set()}
    real_build = stages.build_stage

    def in_phase(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            phase[0] = name
            try:
                return fn(*args, **kwargs)
            finally:
                phase[0] = "other"

        return wrapped

    def build(cfg: Any, dm: PDEDataModule) -> Any:
        stage = real_build(cfg, dm)
        stage.model.surrogate.encoder.register_forward_hook(lambda *_: calls.update([phase[0]]))
        step = stage.training_step

        def training_step(batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            if stage.global_step == fail_at:
                raise RuntimeError(f"interrupted at step {fail_at}")
            seen["steps"] += 1
            seen["keys"] |= set(batch)
            return step(batch, batch_idx)

        stage.training_step = in_phase("train_step", training_step)
        if isinstance(dm, LatentCacheDataModule):
            dm.open_cache = in_phase("cache", dm.open_cache)
        seen["dm"] = dm
        return stage

    mp.setattr(stages, "build_stage", build)
    try:
        result = train(cfg, run_dir)
    finally:
        mp.undo()
    return Traced(result, seen["dm"], calls, seen["steps"], seen["keys"])


def diff_config(tiny_config: Any, init_from: Path, cache_root: Path, *overrides: str) -> Any:
    return tiny_config(
        *SMALL,
        *DENOISER,
        "stage=diff_residual",
        f"init_from={init_from}",
        "cache.enabled=true",
        f"cache.root={cache_root}",
        *overrides,
    )


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("latent_cache")


@pytest.fixture(scope="module")
def operator_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_config: Any) -> Path:
    return train(tiny_config(*SMALL), tmp_path_factory.mktemp("op") / "run").best_checkpoint


@pytest.fixture(scope="module")
def diff_cached(tmp_path_factory, tiny_config, operator_ckpt, cache_root) -> Traced:
    with pytest.MonkeyPatch.context() as mp:
        cfg = diff_config(tiny_config, operator_ckpt, cache_root)
        return traced_train(mp, cfg, tmp_path_factory.mktemp("diff") / "run")


def test_diff_residual_trains_without_the_encoder(
    diff_cached, tiny_config, operator_ckpt, tmp_path
):
    dm = diff_cached.dm
    assert isinstance(dm, LatentCacheDataModule) and dm.cache is not None and dm.cache.built
    assert diff_cached.steps == 4 and diff_cached.batch_keys == BATCH_KEYS
    assert diff_cached.encoder_calls["train_step"] == 0
    assert diff_cached.encoder_calls["cache"] > 0  # the build encoded the training split
    assert diff_cached.encoder_calls["other"] > 0  # validation still encodes physical fields
    meta = json.loads((dm.cache.path / "meta.json").read_text())
    assert {a["split"] for a in meta["arrays"]} == {"train"}
    assert math.isfinite(diff_cached.metric) and diff_cached.metric > 0
    assert math.isfinite(diff_cached.result.metrics["val/rollout_nrmse"])
    scale = load_checkpoint(diff_cached.result.best_checkpoint)["state_dict"]["model.residual_std"]
    assert not torch.allclose(scale, torch.ones_like(scale))  # measured on cached latents

    # the same fit without the cache runs the encoder in every training step
    cfg = diff_config(tiny_config, operator_ckpt, tmp_path / "unused", "cache.enabled=false")
    with pytest.MonkeyPatch.context() as mp:
        fields = traced_train(mp, cfg, tmp_path / "run")
    assert type(fields.dm) is PDEDataModule and not (tmp_path / "unused").exists()
    assert fields.encoder_calls["train_step"] == 4 and fields.encoder_calls["cache"] == 0
    assert "fields" in fields.batch_keys


def _shifted_encoder(ckpt: Path, out: Path) -> Path:
    """A copy of the operator checkpoint with other encoder weights."""
    checkpoint = load_checkpoint(ckpt)
    name = next(k for k in checkpoint["state_dict"] if k.startswith("model.encoder."))
    checkpoint["state_dict"][name] = checkpoint["state_dict"][name] + 0.01
    torch.save(checkpoint, out)
    return out


def test_unrelated_changes_reuse_the_entry_latent_ones_rebuild(
    diff_cached, tiny_config, operator_ckpt, cache_root, tmp_path, monkeypatch, caplog
):
    first = diff_cached.dm.cache
    stamp = (first.path / "meta.json").stat().st_mtime_ns
    caplog.set_level("INFO")

    cfg = diff_config(
        tiny_config, operator_ckpt, cache_root, "optimizer.lr=1e-4", "data.loader.batch_size=8"
    )
    same = traced_train(monkeypatch, cfg, tmp_path / "lr")
    assert not same.dm.cache.built and same.dm.cache.key == first.key
    assert (first.path / "meta.json").stat().st_mtime_ns == stamp
    assert same.encoder_calls["cache"] == 0 and same.encoder_calls["train_step"] == 0
    assert f"latent cache reused: key {first.key} at {first.path} (" in caplog.text

    # other encoder weights (a retrained operator) change the key
    shifted = _shifted_encoder(operator_ckpt, tmp_path / "shifted.ckpt")
    other = traced_train(monkeypatch, diff_config(tiny_config, shifted, cache_root), tmp_path / "w")
    assert other.dm.cache.built and other.encoder_calls["cache"] > 0
    assert f"latent cache built: key {other.dm.cache.key}" in caplog.text

    # a coarser grid needs its own operator and gives its own entry
    coarse = ("data.reduced_resolution=8",)
    op8 = train(tiny_config(*SMALL, *coarse), tmp_path / "op8").best_checkpoint
    grid = traced_train(
        monkeypatch, diff_config(tiny_config, op8, cache_root, *coarse), tmp_path / "g"
    )
    assert grid.dm.cache.built and grid.encoder_calls["train_step"] == 0
    assert len({first.key, other.dm.cache.key, grid.dm.cache.key}) == 3
    assert sorted(p.name for p in cache_root.iterdir()) == sorted(
        [first.key, other.dm.cache.key, grid.dm.cache.key]
    )


def test_consistency_trains_from_the_same_entry(diff_cached, tiny_config, cache_root, tmp_path):
    cfg = tiny_config(
        *SMALL,
        *DENOISER,
        "stage=consistency_distill",
        f"init_from={diff_cached.result.best_checkpoint}",
        "cache.enabled=true",
        f"cache.root={cache_root}",
    )
    with pytest.MonkeyPatch.context() as mp:
        cd = traced_train(mp, cfg, tmp_path / "cd")
    assert isinstance(cd.dm, LatentCacheDataModule)
    # the frozen encoder is the operator's again: the diff_residual entry is reused
    assert not cd.dm.cache.built and cd.dm.cache.key == diff_cached.dm.cache.key
    assert cd.steps == 4 and cd.batch_keys == BATCH_KEYS
    assert cd.encoder_calls["train_step"] == 0 and cd.encoder_calls["cache"] == 0
    assert math.isfinite(cd.metric) and cd.result.metrics["train/loss_epoch"] > 0


def test_cached_loader_resumes_mid_epoch_and_mixes_tasks(tiny_config, burgers_file, tmp_path):
    copy = tmp_path / "burgers_b.h5"
    shutil.copy(burgers_file, copy)
    cfg = tiny_config(
        "data.max_samples=8",
        "data.loader.batch_size=4",
        "stage=diff_residual",
        "cache.enabled=true",
        f"cache.root={tmp_path / 'cache'}",
        "data.task_names=[a, b]",
        "data.task_weights={a: 3.0, b: 1.0}",
        files=[burgers_file, copy],
    )
    dm = stages.build_datamodule(cfg)
    assert isinstance(dm, LatentCacheDataModule)
    with pytest.raises(RuntimeError, match="no encoder is attached"):
        dm.setup("fit")
    torch.manual_seed(0)
    surrogate = LatentSurrogate(with_data_shapes(cfg, dm).model).eval()
    surrogate.set_normalization(*dm.field_stats())
    dm.attach_encoder(surrogate)
    dm.prepare_data()
    assert dm.cache is not None and dm.cache.built

    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, ResumableSampler) and sampler.weights is not None
    share_a = sampler.weights[: len(sampler.weights) // 2].sum() / sampler.weights.sum()
    assert share_a.item() == pytest.approx(0.75)
    batches = [b["latents"] for b in loader]
    assert batches[0].shape == (4, 3, 16, 32)

    dm.load_state_dict({"train_position": sampler.state_dict(consumed=2 * 4)})
    rest = [b["latents"] for b in dm.train_dataloader()]
    assert len(rest) == len(batches) - 2
    assert all(torch.equal(a, b) for a, b in zip(rest, batches[2:], strict=True))


def test_cached_training_resumes_mid_epoch_bit_identically(
    tiny_config, operator_ckpt, cache_root, tmp_path, monkeypatch
):
    cfg = diff_config(tiny_config, operator_ckpt, cache_root, "checkpoint.every_n_train_steps=1")
    reference = traced_train(monkeypatch, cfg, tmp_path / "reference")
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted at step 2"):
        traced_train(monkeypatch, cfg, run, fail_at=2)
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    resumed = traced_train(monkeypatch, cfg, run)  # resume="auto" continues from last.ckpt
    assert reference.steps == 4 and resumed.steps == 2  # only the rest of the epoch
    assert resumed.encoder_calls["train_step"] == 0 and not resumed.dm.cache.built
    expected = load_checkpoint(reference.result.last_checkpoint)["state_dict"]
    found = load_checkpoint(resumed.result.last_checkpoint)["state_dict"]
    denoiser = [k for k in expected if k.startswith("model.denoiser.")]
    assert denoiser and all(torch.equal(found[k], expected[k]) for k in denoiser)
    assert torch.equal(found["model.residual_std"], expected["model.residual_std"])
