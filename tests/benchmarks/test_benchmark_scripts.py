"""The benchmark scripts run end to end on the CPU at the tiniest sizes and print JSON lines
with the keys the benchmark docs read; every number that must be positive is."""

from __future__ import annotations

import pytest
from script_runner import json_records, load_script, run_benchmark

from lightstack.physics.data.pdebench import inspect_file

TINY_OPERATOR = [
    *("--device", "cpu", "--width", "16", "--depth", "1", "--heads", "2", "--tokens", "4"),
    *("--patch", "2", "--batch", "4", "--steps", "3", "--warmup", "1", "--repeats", "1"),
]
TINY_MFU = [
    *("--device", "cpu", "--sizes", "32x1x8x2", "16x1x4x2", "--head-dim", "16"),
    *("--steps", "2", "--warmup", "1", "--repeats", "1"),
]


@pytest.mark.parametrize(
    "precision",
    [
        "32-true",
        "bf16-mixed",
        "bf16-true",
    ],
)
def test_operator_overhead_prints_both_loops_and_the_ratio(precision):
    records, _ = json_records("operator_overhead.py", *TINY_OPERATOR, "--precision", precision)
    *runs, summary = records
    assert [r["loop"] for r in runs] == ["lightstack", "plain"]
    for r in runs:
        assert r["benchmark"] == "operator_overhead" and r["precision"] == precision
        assert r["ms_per_step"] > 0 and r["samples_per_s"] > 0
        assert r["device"] == "cpu" and r["peak_mem_gb"] is None
        assert (r["width"], r["depth"], r["tokens"], r["batch"]) == (16, 1, 4, 4)
    assert summary["loop"] == "summary"
    ratio = summary["lightstack_ms_per_step"] / summary["plain_ms_per_step"]
    assert summary["ratio"] == pytest.approx(ratio, rel=1e-3) and summary["ratio"] > 0
    assert summary["lightstack_ms_all"] == [runs[0]["ms_per_step"]]
    assert summary["cpu_ratio"] > 0 and summary["plain_cpu_ms_per_step"] > 0


def test_operator_overhead_takes_overrides_one_loop_and_profiles_it():
    records, stderr = json_records(
        "operator_overhead.py",
        *TINY_OPERATOR,
        "--profile",
        "--loops",
        "lightstack",
        "--override",
        "training.nan_guard.enabled=false",
        "--override",
        "logging.progress_bar=none",
    )
    run, summary = records
    assert run["loop"] == "lightstack" and run["ms_per_step"] > 0
    assert run["overrides"] == ["training.nan_guard.enabled=false", "logging.progress_bar=none"]
    assert "ratio" not in summary and summary["lightstack_ms_per_step"] == run["ms_per_step"]
    assert run["cpu_ms_per_step"] > 0
    assert "=== lightstack: top 30 by host time over 3 steps" in stderr
    assert "=== plain" not in stderr


def test_operator_overhead_rejects_a_bad_override():
    proc = run_benchmark("operator_overhead.py", "--override", "trainer.nope=1")
    assert proc.returncode != 0
    assert "trainer.nope" in proc.stderr and "unknown key" in proc.stderr


def test_operator_mfu_reports_flops_and_mfu_per_size_and_model():
    records, stderr = json_records("operator_mfu.py", *TINY_MFU, "--compile", "off", "--profile")
    runs = [r for r in records if r["repeat"] != "median"]
    medians = [r for r in records if r["repeat"] == "median"]
    models = ["latent_operator", "plain_transformer"]
    assert [(r["width"], r["model"]) for r in runs] == [(32, m) for m in models] + [
        (16, m) for m in models
    ]
    assert len(medians) == 4
    for r in records:
        assert r["benchmark"] == "operator_mfu" and r["compile"] is False
        assert r["flops_per_step"] > 0 and r["ms_per_step"] > 0
        assert r["mfu"] > 0 and r["tflops_per_s"] > 0 and r["samples_per_s"] > 0
        mfu = r["flops_per_step"] / (r["ms_per_step"] / 1000) / (r["peak_tflops"] * 1e12)
        assert r["mfu"] == pytest.approx(mfu, rel=1e-2)
    # adaLN modulation adds work on top of a plain block of the same size
    flops = {(r["width"], r["model"]): r["flops_per_step"] for r in medians}
    assert flops[(32, "latent_operator")] > flops[(32, "plain_transformer")]
    assert stderr.count("top 15 by self_cpu_time_total") == 4


def test_operator_mfu_rejects_a_bad_size():
    proc = run_benchmark("operator_mfu.py", "--sizes", "512x12x256")
    assert proc.returncode == 2 and "WIDTHxDEPTHxTOKENSxBATCH" in proc.stderr


@pytest.mark.slow
def test_both_scripts_compile_on_cpu():
    records, _ = json_records(
        "operator_mfu.py",
        *TINY_MFU[:4],
        "--head-dim",
        "16",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--repeats",
        "1",
        "--compile",
        "on",
        "--models",
        "latent_operator",
    )
    assert [(r["compile"], r["model"]) for r in records] == [(True, "latent_operator")] * 2
    records, _ = json_records("operator_overhead.py", *TINY_OPERATOR, "--compile")
    assert records[-1]["ratio"] > 0 and records[0]["compile"] is True


@pytest.mark.parametrize(
    ("equation", "models"),
    [("burgers1d", "operator,fno"), ("ns2d", "operator,fno"), ("darcy2d", "steady_prior,fno")],
)
def test_quality_per_compute_compares_each_problem_with_the_fno(equation, models):
    proc = run_benchmark("quality_per_compute.py", "--equation", equation, "--models", "nothing")
    assert proc.returncode == 2
    assert f"--models nothing: choose from {models}" in proc.stderr


@pytest.mark.parametrize("equation", ["advection1d", "burgers1d", "ns2d", "darcy2d"])
def test_quality_per_compute_problems_generate_their_data(equation, tmp_path):
    """Each problem's generator parameters are ones its generator takes (a renamed parameter
    once broke the 2D problems only on the GPU machine)."""
    script = load_script("quality_per_compute")
    path = script.generate_data(equation, samples=1, seed=0, out_dir=tmp_path)
    info = inspect_file(path)
    assert info.n_samples == 1
    assert info.spatial_shape[-1] == script.PROBLEMS[equation].params["nx"]
