"""build_trainer: strategy, precision, accumulation, profiling, callbacks, compile, CLI flags."""

from __future__ import annotations

import logging
import sys
import warnings

import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, Timer
from lightning.pytorch.profilers import PyTorchProfiler
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn
from torch.distributed.fsdp import ShardingStrategy

from lightstack.core.callbacks.memory import MemoryCleanup
from lightstack.core.callbacks.throughput import ThroughputMonitor, peak_flops
from lightstack.core.compile import COMPILE_GUARDS, compile_problem, maybe_compile
from lightstack.core.config import ConfigError, apply_updates
from lightstack.core.devices import build_strategy
from lightstack.core.trainer import (
    build_profiler,
    build_trainer,
    timings,
    trainer_overrides,
)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")


# --- accumulation ---------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_accumulating_two_half_batches_equals_one_full_batch(toy, tmp_path, optimizer):
    weights = []
    for batch, accumulate in ((8, 1), (4, 2)):
        cfg = toy.config(
            f"optimizer.name={optimizer}",
            "trainer.max_steps=1",
            f"trainer.accumulate_grad_batches={accumulate}",
            f"data.batch_size={batch}",
        )
        trainer, module = toy.fit(cfg, tmp_path / f"b{batch}")
        assert trainer.global_step == 1
        weights.append({k: v.clone() for k, v in module.model.state_dict().items()})
    initial = toy.Module(toy.config()).model.state_dict()
    for key, full in weights[0].items():
        assert not torch.equal(full, initial[key])  # one real step happened
        torch.testing.assert_close(weights[1][key], full, rtol=1e-5, atol=1e-6)


# --- precision and strategy -----------------------------------------------------------------
@no_cuda
def test_fp16_with_auto_accelerator_on_cpu_is_refused(toy, tmp_path):
    cfg = toy.config("trainer.accelerator=auto", "trainer.precision=16-mixed")
    with pytest.raises(ValueError, match=r"'16-mixed' needs a CUDA GPU.*resolves to the CPU"):
        build_trainer(cfg, tmp_path, "train/loss")


def test_fp16_with_cpu_accelerator_is_a_config_error(toy):
    with pytest.raises(ConfigError, match="'16-mixed' needs a GPU"):
        toy.config("trainer.precision=16-mixed")


def test_fsdp_strategy_wraps_and_checkpoints_the_model_blocks(toy):
    cfg = toy.config(
        "trainer.strategy=fsdp",
        "trainer.fsdp.activation_checkpointing=true",
        "trainer.fsdp.sharding_strategy=SHARD_GRAD_OP",
        "trainer.fsdp.cpu_offload=true",
    )
    strategy = build_strategy(cfg, toy.Module(cfg))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {nn.Linear}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {
        nn.Linear
    }
    assert strategy.cpu_offload.offload_params
    assert strategy.sharding_strategy == ShardingStrategy.SHARD_GRAD_OP
    assert strategy._state_dict_type == "full"


def test_optimizer_cpu_offload_is_fsdp_offload(toy):
    cfg = toy.config("trainer.strategy=fsdp", "optimizer.cpu_offload=true")
    strategy = build_strategy(cfg, toy.Module(cfg))
    assert strategy.cpu_offload.offload_params
    assert not strategy._activation_checkpointing_kwargs


def test_fsdp_without_declared_blocks(toy):
    plain = nn.Linear(2, 2)
    cfg = toy.config("trainer.strategy=fsdp", "trainer.fsdp.activation_checkpointing=true")
    with pytest.raises(ValueError, match="activation_checkpointing needs the model's blocks"):
        build_strategy(cfg, plain)
    with pytest.warns(UserWarning, match="one FSDP unit"):
        strategy = build_strategy(toy.config("trainer.strategy=fsdp"), plain)
    assert "auto_wrap_policy" not in strategy.kwargs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.fsdp.cpu_offload=true"], "trainer.fsdp is set but trainer.strategy is 'auto'"),
        (["optimizer.cpu_offload=true"], "optimizer.cpu_offload uses FSDP's CPU offload"),
        (["optimizer.name=muon", "trainer.strategy=fsdp"], "muon needs whole weight matrices"),
        (["training.tune.lr_min=2", "training.tune.lr_max=1"], "lr_min .* must be below"),
    ],
)
def test_inconsistent_knobs_are_config_errors(toy, overrides, message):
    with pytest.raises(ConfigError, match=message):
        toy.config(*overrides)


def test_other_strategies_pass_through_by_name(toy):
    for name in ("auto", "ddp", "ddp_find_unused_parameters_true"):
        assert build_strategy(toy.config(f"trainer.strategy={name}")) == name


# --- callbacks, profiling, timings ----------------------------------------------------------
def test_standard_callbacks(toy, tmp_path):
    quiet = build_trainer(toy.config(), tmp_path, "train/loss")
    kinds = {type(cb) for cb in quiet.callbacks}
    assert {Timer, ThroughputMonitor} <= kinds
    assert LearningRateMonitor not in kinds  # no logger to write to
    assert MemoryCleanup not in kinds
    cfg = toy.config(
        "logging.loggers=[csv]",
        "trainer.max_time='00:01:00:00'",
        "training.memory_cleanup.enabled=true",
    )
    trainer = build_trainer(cfg, tmp_path, "train/loss")
    kinds = {type(cb) for cb in trainer.callbacks}
    assert {LearningRateMonitor, MemoryCleanup} <= kinds
    timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
    assert timer._duration == 3600


def test_simple_profiler_writes_into_run_dir(toy, tmp_path):
    trainer, _ = toy.fit(toy.config("training.profile=simple"), tmp_path)
    reports = list((tmp_path / "profiler").glob("*profile*.txt"))
    assert reports and "run_training_epoch" in reports[0].read_text()
    spent = timings(trainer)
    assert set(spent) == {"time/train_s", "time/validate_s"} and spent["time/train_s"] > 0


def test_pytorch_profiler_schedule_from_config(toy, tmp_path):
    cfg = toy.config("training.profile=pytorch", "training.profile_schedule={wait: 0, active: 2}")
    profiler = build_profiler(cfg, tmp_path)
    assert isinstance(profiler, PyTorchProfiler)
    assert profiler.dirpath == tmp_path / "profiler"
    schedule = profiler._schedule._schedule  # torch.profiler.schedule inside Lightning's wrapper
    actions = [schedule(step).name for step in range(4)]  # wait 0, warmup 1, active 2
    assert actions == ["WARMUP", "RECORD", "RECORD_AND_SAVE", "NONE"]
    assert build_profiler(toy.config(), tmp_path) is None


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989e12
    assert peak_flops("NVIDIA H200", "bf16-true") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "16-mixed") == 756e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "64-true") is None
    assert peak_flops("Some Future GPU", "bf16-mixed") is None
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert peak_flops("NVIDIA H100 80GB HBM3", "32-true") == 66.9e12
        torch.set_float32_matmul_precision("high")
        assert peak_flops("NVIDIA H100 80GB HBM3", "32-true") == 494.7e12
    finally:
        torch.set_float32_matmul_precision(previous)


# --- compile --------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
        self.norm = nn.LayerNorm(2)


def _compiled(module: nn.Module) -> bool:
    return module._compiled_call_impl is not None


def test_maybe_compile_whole_model_or_regions():
    net = Net()
    assert not maybe_compile(net, enabled=False)
    assert maybe_compile(net, enabled=True) and _compiled(net)
    regional = Net()
    assert maybe_compile(regional, True, "default", regions={nn.Linear})
    assert all(_compiled(b) for b in regional.blocks)
    assert not _compiled(regional) and not _compiled(regional.norm)
    with pytest.raises(ValueError, match="no submodule of type"):
        maybe_compile(Net(), True, regions={nn.Conv1d})


@pytest.mark.parametrize(
    ("guard", "device", "patch"),
    [
        ("no_cxx_compiler", "cpu", ("shutil.which", lambda name: None)),
        ("no_triton", "cuda", ("importlib.util.find_spec", lambda name: None)),
    ],
)
def test_compile_stays_eager_where_a_guard_fires(monkeypatch, guard, device, patch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(*patch)
    assert compile_problem(device) == COMPILE_GUARDS[guard].reason
    with pytest.warns(UserWarning, match=f"model.compile is off for this run on {device}"):
        assert not maybe_compile(Net(), True, device=device)
    net = Net()
    assert maybe_compile(net, True, device=device, force=True) and _compiled(net)


def test_compiler_guard_reads_cxx(monkeypatch):
    no_compiler = COMPILE_GUARDS["no_cxx_compiler"].fires
    monkeypatch.setenv("CXX", sys.executable)  # any executable stands for a compiler here
    assert not no_compiler(torch.device("cpu"))
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert no_compiler(torch.device("cpu")) and not no_compiler(torch.device("cuda"))


# --- CLI flags and config updates -----------------------------------------------------------
def test_trainer_overrides_for_cli_flags(toy):
    assert trainer_overrides() == []
    overrides = trainer_overrides(
        devices_per_node=4,
        num_nodes=2,
        accumulate_grad_batches=8,
        sync_batchnorm=True,
        tune_batch_size=True,
        tune_lr=False,
    )
    assert overrides == [
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "trainer.accumulate_grad_batches=8",
        "trainer.sync_batchnorm=true",
        "training.tune.batch_size=true",
        "training.tune.lr=false",
    ]
    cfg = toy.config(*overrides)
    assert (cfg.trainer.devices, cfg.trainer.num_nodes) == (4, 2)
    assert cfg.trainer.accumulate_grad_batches == 8 and cfg.trainer.sync_batchnorm
    assert cfg.training.tune.batch_size and not cfg.training.tune.lr


def test_apply_updates_validates(toy):
    cfg = apply_updates(toy.config(), {"data.batch_size": 3, "optimizer.lr": 0.5})
    assert (cfg.data.batch_size, cfg.optimizer.lr) == (3, 0.5)
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        apply_updates(cfg, {"data.batch_size": 0})
    with pytest.raises(ConfigError, match=r"nope\.lr: no such section"):
        apply_updates(cfg, {"nope.lr": 1})


# --- data loader knobs ----------------------------------------------------------------------
def test_loader_knobs_reach_the_physics_dataloaders(burgers_file):
    from lightstack.physics.config import PhysicsDataConfig
    from lightstack.physics.data.windows import PDEDataModule

    loader = {
        "batch_size": 5,
        "num_workers": 2,
        "prefetch_factor": 3,
        "pin_memory": True,
        "persistent_workers": True,
    }
    cfg = PhysicsDataConfig(train_files=[str(burgers_file)], max_samples=8, loader=loader)
    dm = PDEDataModule(cfg, horizon=1)
    for dl in (dm.train_dataloader(), dm.val_dataloader()):
        assert dl.batch_size == 5 and dl.num_workers == 2 and dl.prefetch_factor == 3
        assert dl.pin_memory and dl.persistent_workers


# --- on a GPU -------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_fsdp_bf16_activation_checkpointing_on_one_gpu(toy, tmp_path):
    from lightstack.core.checkpoints import (
        architecture_fingerprint,
        convert_checkpoint,
        load_checkpoint,
    )

    cfg = toy.config(
        "trainer.accelerator=gpu",
        "trainer.precision=bf16-mixed",
        "trainer.strategy=fsdp",
        "trainer.fsdp.activation_checkpointing=true",
        "trainer.max_epochs=2",
    )
    trainer, _ = toy.fit(cfg, tmp_path)
    assert isinstance(trainer.strategy, FSDPStrategy) and trainer.global_step == 8
    path = tmp_path / "fsdp.ckpt"
    trainer.save_checkpoint(path)
    ckpt = load_checkpoint(path)
    plain = toy.Module(cfg).model
    assert ckpt["lightstack"]["fingerprint"] == architecture_fingerprint(plain)
    plain.load_state_dict({k[len("model.") :]: v for k, v in ckpt["state_dict"].items()})
    out = convert_checkpoint(path, tmp_path / "fsdp.safetensors")
    assert set(load_checkpoint(out)["state_dict"]) == set(ckpt["state_dict"])


@pytest.mark.gpu
@needs_cuda
def test_throughput_logs_mfu_and_peak_memory_on_gpu(toy, tmp_path):
    import csv

    class WithFlops(toy.Module):
        flops_per_sample = 3 * 2 * (4 * 16 + 16 * 16 + 16)  # forward + backward of the MLP

    cfg = toy.config(
        "trainer.accelerator=gpu", "trainer.precision=bf16-mixed", "logging.loggers=[csv]"
    )
    toy.fit(cfg, tmp_path, WithFlops(cfg), toy.Data(n=8 * 25, batch_size=8))
    with open(tmp_path / "logs" / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("perf/mfu")]
    assert rows and 0 < float(rows[0]["perf/mfu"]) < 1
    assert float(rows[0]["perf/peak_mem_gb"]) > 0 and float(rows[0]["perf/samples_per_s"]) > 0


# --- what a run prints ----------------------------------------------------------------------
def test_a_run_prints_no_tips_leafspec_warning_or_zero_flops(toy, tmp_path, capsys, caplog):

    caplog.set_level(logging.INFO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        toy.fit(toy.config("logging.progress_bar=rich"), tmp_path)
    printed = capsys.readouterr().out + caplog.text
    assert "params:" in printed  # the summary is still there
    for noise in ("Tip:", "litlogger", "litmodels", "FLOPs"):
        assert noise not in printed, noise
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
