"""Error metrics in physical space, following PDEBench's definitions.

Tensors are channels-last: ``(B, T, *S, C)`` for trajectories or ``(B, *S, C)`` for one field.
These are per-sample reductions, so they are written here rather than taken from torchmetrics
(whose NRMSE normalises over the whole batch); batch and process aggregation is left to
``torchmetrics.MeanMetric`` by the callers.
"""

from __future__ import annotations

import torch

EPS = 1e-12


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``(B, ..., C)`` -> ``(B, C, N)``: everything between batch and channel is reduced over."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)


def nrmse_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``||pred - true||_2 / ||true||_2`` per sample and channel, averaged over channels: (B,)."""
    p, t = _flat(pred.float()), _flat(true.float())
    err = torch.linalg.vector_norm(p - t, dim=-1)
    ref = torch.linalg.vector_norm(t, dim=-1).clamp_min(EPS)
    return (err / ref).mean(dim=-1)


def nrmse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return nrmse_per_sample(pred, true).mean()


def rmse_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    p, t = _flat(pred.float()), _flat(true.float())
    return (p - t).pow(2).mean(dim=-1).sqrt().mean(dim=-1)


def max_error_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return (pred.float() - true.float()).abs().flatten(1).amax(dim=1)


def nrmse_per_step(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """nRMSE of every step of a trajectory ``(B, T, *S, C)`` -> ``(B, T)``."""
    b, t = pred.shape[:2]
    return nrmse_per_sample(pred.flatten(0, 1), true.flatten(0, 1)).view(b, t)


def correlation_per_step(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Pearson correlation over space (and channels) of each step: ``(B, T)``."""
    p = pred.float().flatten(2)
    t = true.float().flatten(2)
    p = p - p.mean(dim=-1, keepdim=True)
    t = t - t.mean(dim=-1, keepdim=True)
    denom = (p.norm(dim=-1) * t.norm(dim=-1)).clamp_min(EPS)
    return (p * t).sum(dim=-1) / denom


def correlation_time(corr: torch.Tensor, threshold: float) -> torch.Tensor:
    """Steps until the correlation first falls below ``threshold`` (PDE-Refiner): ``(B,)``.

    A trajectory that never falls below it counts all its steps.
    """
    below = corr < threshold
    first = torch.where(below.any(dim=1), below.float().argmax(dim=1), corr.shape[1])
    return first.float()


def mass_drift(pred: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:
    """Relative change of the spatial mean (mass) from ``u0`` to the last predicted step: (B,).

    ``pred`` is ``(B, T, *S, C)`` and ``u0`` is ``(B, *S, C)``; mass is conserved by periodic
    advection and Burgers, so the truth's drift is ~0 and the model's is an error.
    """
    m0 = u0.float().flatten(1, -2).mean(dim=1)
    m_end = pred[:, -1].float().flatten(1, -2).mean(dim=1)
    scale = u0.float().flatten(1, -2).abs().mean(dim=1).clamp_min(EPS)
    return ((m_end - m0).abs() / scale).mean(dim=-1)
