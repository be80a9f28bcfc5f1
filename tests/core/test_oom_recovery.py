"""Out-of-memory recovery, with torch.OutOfMemoryError injected into a CPU training step."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lightstack.core.callbacks.oom_recovery import (
    OOMRecoveryError,
    fit_with_oom_recovery,
    shrink,
)
from lightstack.core.trainer import fit, trainer_factory


def flaky(toy, cfg, epoch: int = 0, call: int = 1, batch: int | None = 8, always: bool = False):
    """The toy module, raising CUDA OOM at its ``call``-th step of ``epoch`` at micro-batch
    ``batch`` (any size when None); ``always``: at every such step."""

    class Flaky(toy.Module):
        calls = 0

        def training_step(self, data, batch_idx):
            size = data[0].shape[0]
            if self.current_epoch == epoch and (batch is None or size == batch):
                self.calls += 1
                if always or self.calls == call:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().training_step(data, batch_idx)

    return Flaky(cfg)


def reference_weights(toy, tmp_path, epochs: int) -> dict[str, torch.Tensor]:
    cfg = toy.config(f"trainer.max_epochs={epochs}", "data.batch_size=8")
    _, module = toy.fit(cfg, tmp_path / "reference")
    return module.model.state_dict()


def assert_same_weights(module, expected) -> None:
    for key, value in module.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_injected_oom_continues_at_the_same_effective_batch(toy, tmp_path):
    cfg = toy.config("trainer.max_epochs=2", "training.oom_recovery.enabled=true")
    run = tmp_path / "run"
    module = flaky(toy, cfg, call=3)  # two optimizer steps happen before the OOM
    data = toy.Data(batch_size=8)
    trainer = fit(cfg, run, module, data, "train/loss")
    assert (data.batch_size, trainer.accumulate_grad_batches) == (4, 2)
    assert trainer.global_step == 8  # 32 samples / effective 8, two epochs
    assert_same_weights(module, reference_weights(toy, tmp_path, epochs=2))
    events = json.loads((run / "oom_recovery.json").read_text())
    assert events == [
        {
            "epoch": 0,
            "global_step": 2,
            "oom_batch_size": 8,
            "batch_size": 4,
            "accumulate_grad_batches": 2,
            "resume_from": None,
        }
    ]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["batch_size"] == 4
    assert resolved["trainer"]["accumulate_grad_batches"] == 2
    assert not (run / "checkpoints" / "oom-resume.ckpt").exists()  # removed after success


def test_oom_in_a_later_epoch_resumes_from_the_epoch_checkpoint(toy, tmp_path):
    cfg = toy.config("trainer.max_epochs=3")
    module = flaky(toy, cfg, epoch=1, call=2)
    data = toy.Data(batch_size=8)
    result = fit_with_oom_recovery(
        trainer_factory(cfg, tmp_path, "train/loss", module), module, data, tmp_path / "ckpts"
    )
    (event,) = result.events
    assert event["epoch"] == 1 and event["resume_from"].endswith("oom-resume.ckpt")
    assert (result.batch_size, result.accumulate_grad_batches) == (4, 2)
    assert result.trainer.global_step == 12
    assert_same_weights(module, reference_weights(toy, tmp_path, epochs=3))


def test_gives_up_below_the_minimum_micro_batch(toy, tmp_path):
    cfg = toy.config()
    module = flaky(toy, cfg, batch=None, always=True)
    factory = trainer_factory(cfg, tmp_path, "train/loss", module)
    with pytest.raises(
        OOMRecoveryError, match=r"micro-batch 2 \(x4 accumulation\).*min_batch_size=2"
    ):
        fit_with_oom_recovery(factory, module, toy.Data(batch_size=8), tmp_path, min_batch_size=2)
    module = flaky(toy, cfg, batch=None, always=True)
    with pytest.raises(OOMRecoveryError, match="after 1 retries"):
        fit_with_oom_recovery(factory, module, toy.Data(batch_size=8), tmp_path, max_retries=1)


def test_other_errors_propagate_unchanged(toy, tmp_path):
    class Broken(toy.Module):
        def training_step(self, data, batch_idx):
            raise ValueError("a bug, not memory")

    cfg = toy.config()
    module = Broken(cfg)
    with pytest.raises(ValueError, match="a bug, not memory"):
        fit_with_oom_recovery(
            trainer_factory(cfg, tmp_path, "train/loss", module), module, toy.Data(), tmp_path
        )


def test_datamodule_needs_a_batch_size(toy, tmp_path):
    data = toy.Data()
    del data.batch_size
    with pytest.raises(TypeError, match="no integer batch_size attribute"):
        fit_with_oom_recovery(lambda a, c: None, toy.Module(toy.config()), data, tmp_path)


def test_shrink_keeps_the_effective_batch():
    assert shrink(8, 1) == (4, 2)
    assert shrink(6, 3) == (3, 6)
    assert shrink(9, 1) == (3, 3)
    assert shrink(7, 2) == (1, 14)
    assert shrink(1, 4) == (0, 4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_cuda_oom_is_recovered(toy, tmp_path):
    """Each sample needs 40 % of the GPU: micro-batch 8 and 4 run out of memory, 2 fits."""
    per_sample = int(torch.cuda.get_device_properties(0).total_memory * 0.4)

    class Hungry(toy.Module):
        def training_step(self, data, batch_idx):
            scratch = torch.empty(per_sample * data[0].shape[0], dtype=torch.uint8, device="cuda")
            return super().training_step(data, batch_idx) + 0 * scratch[:1].float().sum()

    cfg = toy.config("trainer.accelerator=gpu", "training.oom_recovery.enabled=true")
    module, data = Hungry(cfg), toy.Data(batch_size=8)
    trainer = fit(cfg, tmp_path, module, data, "train/loss")
    assert (data.batch_size, trainer.accumulate_grad_batches) == (2, 4)
    events = json.loads((tmp_path / "oom_recovery.json").read_text())
    assert [e["oom_batch_size"] for e in events] == [8, 4]
    assert torch.cuda.memory_allocated() < per_sample
