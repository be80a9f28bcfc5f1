"""AdamW / Muon hybrid optimizer and the warm-up + cosine schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch.optim.lr_scheduler import LambdaLR

from lightstack.core.config import OptimizerConfig, SchedulerConfig
from lightstack.core.optim import HybridOptimizer, WarmupCosine, build_optimization, build_optimizer

MUON = OptimizerConfig(name="muon", lr=1e-3, muon_lr=0.02, scheduler={"name": "none"})


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    model(x).pow(2).mean().backward()
    optimizer.step()


def test_muon_takes_hidden_matrices_adamw_the_rest(toy):
    model = toy.Module(toy.config()).model
    opt = build_optimizer(MUON, model)
    assert isinstance(opt, HybridOptimizer)
    adamw, muon = opt.optimizers
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    assert muon_params == {id(model.hidden.weight)}
    assert len(opt.param_groups) == 2
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.02]
    assert opt.param_groups[1] is muon.param_groups[0]  # live view, not a copy


def test_adamw_only_when_nothing_is_a_hidden_matrix():
    model = torch.nn.Sequential(torch.nn.LayerNorm(4))
    assert isinstance(build_optimizer(MUON, model), torch.optim.AdamW)


def test_state_dict_round_trip_continues_identically(toy):
    model = toy.Module(toy.config()).model
    opt = build_optimizer(MUON, model)
    for seed in range(2):
        _step(model, opt, seed)
    assert len(opt.state) == 6  # AdamW: 5 tensors (2 weights, 3 biases); Muon: 1 weight
    twin = copy.deepcopy(model)
    twin_opt = build_optimizer(MUON, twin)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    buffer = opt.optimizers[1].state[model.hidden.weight]["momentum_buffer"]
    twin_buffer = twin_opt.optimizers[1].state[twin.hidden.weight]["momentum_buffer"]
    assert torch.equal(buffer, twin_buffer)
    _step(model, opt, 5)
    _step(twin, twin_opt, 5)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_state_dict_of_another_optimizer_is_refused(toy):
    model = toy.Module(toy.config()).model
    opt = build_optimizer(MUON, model)
    with pytest.raises(ValueError, match=r"holds 1 optimizers .* has 2 \(AdamW, Muon\)"):
        opt.load_state_dict({"optimizers": [opt.optimizers[0].state_dict()]})
    with pytest.raises(AttributeError, match="view"):
        opt.param_groups = [{"params": []}]


def test_lambda_lr_schedules_both_groups(toy):
    cfg = MUON.model_copy(update={"scheduler": SchedulerConfig(warmup_steps=2, min_lr_ratio=0.1)})
    model = toy.Module(toy.config()).model
    out = build_optimization(cfg, model, total_steps=10)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert isinstance(sched, LambdaLR)
    seen = []
    for seed in range(10):
        seen.append([g["lr"] for g in opt.param_groups])
        _step(model, opt, seed)
        sched.step()
    assert seen[0] == pytest.approx([0.5e-3, 0.01])  # warm-up: (step + 1) / warmup_steps
    assert seen[2] == pytest.approx([1e-3, 0.02])  # peak right after warm-up
    assert seen[-1][0] / seen[-1][1] == pytest.approx(1e-3 / 0.02)  # same factor on both


def test_warmup_cosine_values():
    f = WarmupCosine(SchedulerConfig(warmup_steps=4, min_lr_ratio=0.1), total_steps=104)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(54) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert f(104) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert f(30) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 26 / 100)))
    constant = WarmupCosine(SchedulerConfig(name="constant", warmup_steps=2), total_steps=10)
    assert [constant(s) for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_finetuning_param_groups_go_to_adamw(toy):
    model = toy.Module(toy.config()).model
    BaseFinetuning.freeze(model.head)
    opt = build_optimizer(MUON, model)
    adamw = opt.optimizers[0]
    before = len(adamw.param_groups)
    BaseFinetuning.unfreeze_and_add_param_group(model.head, opt)
    assert len(adamw.param_groups) == before + 1 and len(opt.param_groups) == 3
    # Lightning scales group 0's LR: AdamW's (1e-3), not Muon's (0.02), / initial_denom_lr
    assert adamw.param_groups[-1]["lr"] == pytest.approx(1e-3 / 10)
    head = model.head.weight.detach().clone()
    _step(model, opt, 0)
    assert not torch.equal(head, model.head.weight)
    assert model.head.weight in adamw.state


class _Probe(Callback):
    """Gradient norms the optimizer steps with (after clipping) and Muon's state at the start."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.muon_state_at_start = -1

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.muon_state_at_start = len(optimizer.optimizers[1].state)

        def record(child, args, kwargs):
            grads = [p.grad.flatten() for g in optimizer.param_groups for p in g["params"]]
            self.norms.append(float(torch.cat(grads).norm()))

        # Lightning runs forward/backward/clipping in the closure HybridOptimizer.step calls
        # first, so the children step with the clipped gradients.
        optimizer.optimizers[0].register_step_pre_hook(record)


def test_lightning_trains_hybrid_with_clipping_accumulation_and_resume(toy, tmp_path):
    overrides = (
        "optimizer.name=muon",
        "optimizer.scheduler.name=cosine",
        "trainer.accumulate_grad_batches=2",
        "trainer.gradient_clip_val=0.01",
    )
    probe = _Probe()
    trainer, module = toy.fit(toy.config(*overrides), tmp_path / "a", callbacks=[probe])
    assert trainer.global_step == 2  # 4 micro-batches, 2 per step
    assert len(probe.norms) == 2 and max(probe.norms) <= 0.01 + 1e-6
    assert probe.muon_state_at_start == 0
    opt = trainer.optimizers[0]
    assert isinstance(opt, HybridOptimizer)
    assert module.model.hidden.weight in opt.optimizers[1].state
    ckpt = tmp_path / "a" / "one.ckpt"
    trainer.save_checkpoint(ckpt)

    probe = _Probe()
    cfg = toy.config(*overrides, "trainer.max_epochs=2")
    trainer, _ = toy.fit(cfg, tmp_path / "b", callbacks=[probe], ckpt_path=ckpt)
    assert probe.muon_state_at_start == 1  # restored from the checkpoint
    assert trainer.global_step == 4 and len(probe.norms) == 2
