"""Error metrics in physical space, as PDEBench's ``metric_func`` (pdebench/models/metrics.py)
defines them.

Tensors are channels-last: ``(B, T, *S, C)`` for trajectories or ``(B, *S, C)`` for one field.
PDEBench first computes each error per sample, channel and time step over space, then reduces
over the batch (a mean for RMSE, nRMSE and bRMSE; a max for the max error; an RMS for cRMSE and
fRMSE) and finally takes the mean over channels and time steps. ``sample_errors`` holds the
first part per sample; ``ErrorSums`` accumulates it over any number of batches so that the
whole test set is reduced as one batch (see docs/physics.md, "How each number averages").

A ratio of sums over space and time together is a different metric, PDEArena's scaled L2
(``scaled_l2``); it is not called nRMSE here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

EPS = 1e-12
# PDEBench's Fourier bands: wavenumbers [0, 4) low, [4, 12) mid, [12, ...) high.
I_LOW, I_HIGH = 4, 12
FOURIER_BANDS = {"low": (0, I_LOW), "mid": (I_LOW, I_HIGH), "high": (I_HIGH, None)}


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``(B, ..., C)`` -> ``(B, C, N)``: everything between batch and channel is reduced over."""
    return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)


def nrmse_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``||pred - true||_2 / ||true||_2`` per sample and channel of one field ``(B, *S, C)``,
    averaged over channels: ``(B,)``. On a single snapshot this is PDEBench's nRMSE."""
    p, t = _flat(pred.float()), _flat(true.float())
    err = torch.linalg.vector_norm(p - t, dim=-1)
    ref = torch.linalg.vector_norm(t, dim=-1).clamp_min(EPS)
    return (err / ref).mean(dim=-1)


def nrmse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return nrmse_per_sample(pred, true).mean()


def rmse_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """RMSE over space per sample and channel of one field, averaged over channels: ``(B,)``."""
    p, t = _flat(pred.float()), _flat(true.float())
    return (p - t).pow(2).mean(dim=-1).sqrt().mean(dim=-1)


def max_error_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    return (pred.float() - true.float()).abs().flatten(1).amax(dim=1)


def nrmse_per_step(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """nRMSE of every step of a trajectory ``(B, T, *S, C)`` -> ``(B, T)``."""
    b, t = pred.shape[:2]
    return nrmse_per_sample(pred.flatten(0, 1), true.flatten(0, 1)).view(b, t)


def trajectory_nrmse_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """PDEBench's nRMSE of each trajectory ``(B, T, *S, C)``: the per-step ratio over space,
    averaged over steps and channels: ``(B,)``."""
    return nrmse_per_step(pred, true).mean(dim=1)


def scaled_l2_per_sample(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """PDEArena's scaled L2: one ratio of norms over space and time together per sample and
    channel, averaged over channels: ``(B,)``. Late steps of a decaying truth weigh little."""
    return nrmse_per_sample(pred, true)


# --- PDEBench's metric_func, per sample ---------------------------------------------------------
def _boundary_sq(diff: torch.Tensor) -> torch.Tensor:
    """Mean squared error on the domain's boundary faces, ``(B, T, *S, C)`` -> ``(B, T, C)``.

    1D: the two end points; 2D: the four edges (corners counted twice); 3D: the six faces, each
    divided by the number of points on the faces, as PDEBench does.
    """
    spatial = diff.shape[2:-1]
    faces, points = [], 0
    for axis, n in enumerate(spatial):
        dim = 2 + axis
        for index in (0, n - 1):
            face = diff.select(dim, index).pow(2)
            faces.append(face.flatten(2, -2).sum(dim=2) if face.dim() > 3 else face)
        points += 2 * math.prod(s for a, s in enumerate(spatial) if a != axis)
    return torch.stack(faces).sum(dim=0) / points


def _fourier_sq(diff: torch.Tensor) -> torch.Tensor:
    """Squared spectral error per wavenumber shell, ``(B, T, *S, C)`` -> ``(B, T, K, C)``.

    1D: ``|rfft(diff)|^2`` per wavenumber (K = X // 2 + 1). 2D/3D: ``|fftn(diff)|^2`` of the
    wavenumbers ``0 <= i < n // 2`` of every axis, summed into shells ``floor(|k|)`` below
    ``min(n) // 2``, as PDEBench bins them.
    """
    spatial = diff.shape[2:-1]
    dims = tuple(range(2, 2 + len(spatial)))
    if len(spatial) == 1:
        return torch.fft.rfft(diff, dim=2).abs().pow(2)
    power = torch.fft.fftn(diff, dim=dims).abs().pow(2)
    power = power[(slice(None), slice(None), *(slice(0, n // 2) for n in spatial))]
    shells = min(n // 2 for n in spatial)
    wavenumbers = torch.meshgrid(
        *(torch.arange(n // 2, dtype=torch.float64) for n in spatial), indexing="ij"
    )
    shell = sum(k.pow(2) for k in wavenumbers).sqrt().floor().long().flatten().to(diff.device)
    keep = shell < shells
    flat = power.flatten(2, -2)[:, :, keep]
    out = flat.new_zeros(*flat.shape[:2], shells, flat.shape[-1])
    return out.index_add_(2, shell[keep], flat)


def sample_errors(pred: torch.Tensor, true: torch.Tensor) -> dict[str, torch.Tensor]:
    """PDEBench's errors of each sample, channel and step, before any reduction over samples.

    ``pred`` and ``true`` are ``(B, T, *S, C)`` holding only the steps to score (PDEBench drops
    the ``initial_step`` input snapshots first). Returns ``(B, C, T)`` tensors ``rmse``,
    ``nrmse``, ``max_abs``, ``conserved_sq`` (squared error of the spatial sum) and
    ``boundary`` (boundary RMSE), and ``fourier_sq`` ``(B, C, K, T)``. No epsilon guards the
    nRMSE denominator, as in PDEBench; NaN or Inf in ``pred`` gives NaN or Inf errors.
    """
    diff = pred.double() - true.double()
    space = tuple(range(2, diff.dim() - 1))
    rmse = diff.pow(2).mean(dim=space).sqrt()
    norm = true.double().pow(2).mean(dim=space).sqrt()
    out = {
        "rmse": rmse,
        "nrmse": rmse / norm,
        "max_abs": diff.abs().amax(dim=space),
        "conserved_sq": diff.sum(dim=space).pow(2),
        "boundary": _boundary_sq(diff).sqrt(),
    }
    out = {k: v.transpose(1, 2) for k, v in out.items()}  # (B, T, C) -> (B, C, T)
    out["fourier_sq"] = _fourier_sq(diff).permute(0, 3, 2, 1)  # (B, T, K, C) -> (B, C, K, T)
    return out


@dataclass
class ErrorSums:
    """``sample_errors`` reduced over every sample added so far: the whole set as one batch.

    Means and RMS values over samples are kept as sums, the max error as a running max; so
    adding batch after batch gives the numbers ``metric_func`` gives on all samples at once.
    """

    spatial_shape: tuple[int, ...]
    count: int = 0
    sums: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, errors: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> None:
        """Add the ``sample_errors`` of a batch (only the samples in ``mask`` when given)."""
        if mask is not None:
            errors = {k: v[mask.to(v.device)] for k, v in errors.items()}
        n = len(next(iter(errors.values())))
        if not n:
            return
        for name, value in errors.items():
            is_max = name == "max_abs"
            part = (value.amax(dim=0) if is_max else value.sum(dim=0)).detach().cpu()
            old = self.sums.get(name)
            if old is None:
                self.sums[name] = part
            else:  # torch.maximum keeps NaN, so one NaN sample makes the max error NaN
                self.sums[name] = torch.maximum(old, part) if is_max else old + part
        self.count += n

    def metrics(self, steps: int | None = None, prefix: str = "") -> dict[str, float]:
        """PDEBench's numbers over the first ``steps`` scored steps (all when ``None``)."""
        if not self.count:
            return {}
        s = {k: v[..., :steps] for k, v in self.sums.items()}
        n = self.count
        points = math.prod(self.spatial_shape)
        out = {
            "nrmse": s["nrmse"].mean() / n,
            "rmse": s["rmse"].mean() / n,
            "max_error": s["max_abs"].mean(),
            "crmse": ((s["conserved_sq"] / n).sqrt() / points).mean(),
            "brmse": s["boundary"].mean() / n,
        }
        spectrum = (s["fourier_sq"] / n).sqrt() / points  # PDEBench's L = 1 per axis
        for band, (lo, hi) in FOURIER_BANDS.items():
            if spectrum.shape[1] > lo:  # a grid too coarse for a band has no value for it
                out[f"frmse_{band}"] = spectrum[:, lo:hi].mean()
        return {f"{prefix}{k}": float(v) for k, v in out.items()}


# --- rollout diagnostics (PDE-Refiner) ----------------------------------------------------------
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

    A trajectory that never falls below it counts all its steps; a NaN correlation counts as
    below, so a prediction holding NaN or Inf from its first step has correlation time 0.
    """
    below = ~(corr >= threshold)
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
