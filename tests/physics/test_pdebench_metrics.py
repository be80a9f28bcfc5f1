"""lightstack's trajectory metrics against a plain numpy transcription of PDEBench's
``metric_func`` (pdebench/models/metrics.py), on data where a ratio over space and time
together (the old definition, now ``scaled_l2``) gives a very different number."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightstack.physics.eval import metrics as M


def pdebench_reference(pred: np.ndarray, true: np.ndarray, i_low=4, i_high=12) -> dict:
    """PDEBench's formulas, written out with loops, on ``(B, *S, T, C)`` arrays (its layout)
    holding only the scored steps; ``L = 1`` per axis."""
    b, *spatial, t, c = true.shape
    n = math.prod(spatial)
    out = {k: np.zeros((c, t)) for k in ("rmse", "nrmse", "max", "csv", "bd")}
    bands = np.zeros((c, 3, t))
    for ci in range(c):
        for ti in range(t):
            p, y = pred[..., ti, ci], true[..., ti, ci]  # (B, *S)
            d = (p - y).reshape(b, -1)
            rmse = np.sqrt((d**2).mean(axis=1))
            out["rmse"][ci, ti] = rmse.mean()
            out["nrmse"][ci, ti] = (rmse / np.sqrt((y.reshape(b, -1) ** 2).mean(axis=1))).mean()
            out["max"][ci, ti] = np.abs(d).max()
            out["csv"][ci, ti] = np.sqrt((d.sum(axis=1) ** 2).mean()) / n
            diff = p - y
            if len(spatial) == 1:
                bd = (diff[:, 0] ** 2 + diff[:, -1] ** 2) / 2
                spectrum = np.sqrt((np.abs(np.fft.rfft(diff, axis=1)) ** 2).mean(axis=0)) / n
            else:
                nx, ny = spatial
                edges = (diff[:, 0] ** 2 + diff[:, -1] ** 2).sum(axis=1)
                edges += (diff[:, :, 0] ** 2 + diff[:, :, -1] ** 2).sum(axis=1)
                bd = edges / (2 * nx + 2 * ny)
                power = np.abs(np.fft.fftn(diff, axes=(1, 2))) ** 2
                shells = np.zeros((b, min(nx // 2, ny // 2)))
                for i in range(nx // 2):
                    for j in range(ny // 2):
                        k = math.floor(math.sqrt(i**2 + j**2))
                        if k <= min(nx // 2, ny // 2) - 1:
                            shells[:, k] += power[:, i, j]
                spectrum = np.sqrt(shells.mean(axis=0)) / (nx * ny)
            out["bd"][ci, ti] = np.sqrt(bd).mean()
            bands[ci, 0, ti] = spectrum[:i_low].mean()
            bands[ci, 1, ti] = spectrum[i_low:i_high].mean()
            bands[ci, 2, ti] = spectrum[i_high:].mean() if len(spectrum) > i_high else np.nan
    result = {
        "rmse": out["rmse"].mean(),
        "nrmse": out["nrmse"].mean(),
        "max_error": out["max"].mean(),
        "crmse": out["csv"].mean(),
        "brmse": out["bd"].mean(),
    }
    for index, band in enumerate(("low", "mid", "high")):
        result[f"frmse_{band}"] = bands[:, index].mean()
    return result


def decaying(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T, *S, C)`` truth decaying 100x over time and a prediction off by a constant."""
    gen = torch.Generator().manual_seed(seed)
    t = shape[1]
    decay = torch.logspace(0, -2, t, dtype=torch.float64).view(1, t, *[1] * (len(shape) - 2))
    true = (torch.randn(shape, generator=gen, dtype=torch.float64) + 0.5) * decay
    pred = true + 0.02 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return pred, true


def ours(pred: torch.Tensor, true: torch.Tensor, batches: int = 1) -> dict[str, float]:
    sums = M.ErrorSums(tuple(true.shape[2:-1]))
    for p, t in zip(pred.chunk(batches), true.chunk(batches), strict=True):
        sums.add(M.sample_errors(p, t))
    return sums.metrics()


@pytest.mark.parametrize("shape", [(5, 8, 64, 2), (3, 5, 32, 28, 1)], ids=["1d", "2d"])
def test_every_metric_matches_pdebench(shape):
    pred, true = decaying(shape, seed=len(shape))
    reference = pdebench_reference(pred.movedim(1, -2).numpy(), true.movedim(1, -2).numpy())
    got = ours(pred, true, batches=2)  # two batches reduce as one: the whole set at once
    assert set(got) == set(reference)
    for name, value in reference.items():
        assert got[name] == pytest.approx(value, rel=1e-9), name


def test_pdebench_nrmse_differs_from_a_space_time_ratio():
    pred, true = decaying((4, 20, 64, 1), seed=0)
    per_step = ours(pred, true)["nrmse"]
    scaled_l2 = float(M.scaled_l2_per_sample(pred, true).mean())
    # late steps, where the truth is 100x smaller, dominate the per-step mean only
    assert per_step > 2.5 * scaled_l2
    reference = pdebench_reference(pred.movedim(1, -2).numpy(), true.movedim(1, -2).numpy())
    assert per_step == pytest.approx(reference["nrmse"], rel=1e-9)
    assert float(M.trajectory_nrmse_per_sample(pred, true).mean()) == pytest.approx(per_step)


def test_horizon_uses_the_first_steps_only():
    pred, true = decaying((2, 10, 32, 1), seed=1)
    sums = M.ErrorSums((32,))
    sums.add(M.sample_errors(pred, true))
    assert sums.metrics(3)["nrmse"] == pytest.approx(ours(pred[:, :3], true[:, :3])["nrmse"])
    assert sums.metrics(3)["nrmse"] < sums.metrics()["nrmse"]


def test_a_coarse_grid_has_no_high_band():
    pred, true = decaying((2, 3, 16, 1), seed=2)  # rfft of 16 points: 9 wavenumbers
    got = ours(pred, true)
    assert "frmse_high" not in got and math.isfinite(got["frmse_mid"])


def test_nan_prediction_gives_nan_metrics_and_zero_correlation_time():
    pred, true = decaying((3, 6, 32, 1), seed=3)
    pred[1] = float("nan")
    got = ours(pred, true)
    assert all(math.isnan(v) for v in got.values()), got
    time = M.correlation_time(M.correlation_per_step(pred, true), 0.9)
    finite = M.correlation_time(M.correlation_per_step(pred[:1], true[:1]), 0.9)
    assert time[1] == 0 and time[0] == finite[0] > 0
