"""benchmarks/video_throughput.py on the CPU at tiny sizes: settings, compile, batch search."""

from __future__ import annotations

import json

import pytest
import torch
from script_runner import load_script

TINY = ["--device", "cpu", "--batch", "2", "--frames", "4", "--size", "16", "--steps", "1"]
TINY += ["--warmup", "1", "--set", "model.hidden=16"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.slow
def test_every_setting_is_timed_and_compile_reaches_the_plain_loop(monkeypatch, capsys):
    compiled: list[str] = []

    def fake_compile(fn, **kwargs):  # records what is compiled, runs eagerly
        compiled.append(type(fn.__self__).__name__)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    script = load_script("video_throughput")
    script.main([*TINY, "--precision", "32-true", "--compile", "off", "on",
                 "--loops", "plain", "--repeats", "1"])  # fmt: skip
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    settings = [(r["compile"], r["loop"]) for r in lines]
    assert settings == [(False, "plain"), (True, "plain")]
    assert compiled == ["VideoResNet"]  # the backbone, once per compiled run (the module's
    # configure_model compiles it in the other loops: tests/video/test_module.py)
    for r in lines:
        assert r["ms_per_step"] > 0 and r["precision"] == "32-true"
        assert r["clips_per_s"] == pytest.approx(2 * r["actions_per_s"], rel=0.05, abs=0.15)
        assert not r["channels_last"]  # --fp32-set's default: the NCDHW layout in fp32
    options = script.argparse.Namespace(
        config="configs/video/mvfoul_r2plus1d.yaml", set=[], fp32_set=["model.channels_last=false"]
    )
    assert script.run_config(options, "bf16-mixed", compiled=True).model.channels_last
    assert script.run_config(options, "bf16-mixed", compiled=True).model.compile


def test_max_batch_doubles_then_bisects(monkeypatch):
    script = load_script("video_throughput")
    tried: list[int] = []

    def fits(module, optimizer, batch, precision):
        tried.append(batch["video"].shape[0])
        return batch["video"].shape[0] <= 37

    monkeypatch.setattr(script, "fits", fits)
    args = script.argparse.Namespace(
        batch=8, views=1, frames=1, size=1, device=torch.device("cpu"), max_batch_limit=1024
    )
    cfg = script.run_config(
        script.argparse.Namespace(
            config="configs/video/vars_mvit.yaml", set=["model.pretrained_path=null"], fp32_set=[]
        ),
        "bf16-mixed",
        compiled=False,
    )
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"backbone": "r3d_18"})})
    assert script.max_batch(cfg, args, "bf16-mixed") == {"max_batch": 37, "limit_reached": False}
    assert tried[:4] == [8, 16, 32, 64] and tried[-1] in (37, 38)
    args.max_batch_limit = 16
    assert script.max_batch(cfg, args, "bf16-mixed") == {"max_batch": 16, "limit_reached": True}


def test_out_of_memory_recognises_allocator_and_library_failures():
    script = load_script("video_throughput")
    assert script.out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to ..."))
    assert script.out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not script.out_of_memory(RuntimeError("shape mismatch"))
