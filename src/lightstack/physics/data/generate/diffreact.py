"""1D diffusion-reaction (Fisher-KPP) ``u_t = nu u_xx + rho u (1 - u)``, PDEBench's ReacDiff.

Periodic ``[0, 1)``, ``t`` in ``[0, 1]`` saved every 0.01, initial condition PDEBench's sum of
sines normalised to ``[0, 1]``; file attributes ``Nu`` and ``rho`` as in
``ReacDiff_Nu{nu}_Rho{rho}.hdf5``. Pseudo-spectral, integrating-factor RK4 (diffusion exact);
the step keeps ``rho * dt <= 0.05`` so the logistic reaction is resolved to ~1e-9.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lightstack.physics.data.generate.common import (
    IFRK4,
    Progress,
    SineSumIC,
    angular_wavenumbers,
    dealias_mask,
    generate_sine_sum_1d,
    normalize_unit,
    require,
    save_snapshots,
)

MAX_RHO_DT = 0.05


def solve_diffreact(
    u0: np.ndarray, nu: float, rho: float, dt_save: float, n_saves: int, length: float = 1.0
) -> np.ndarray:
    """Evolve ``u0`` ``(B, X)``; returns float64 ``(B, n_saves + 1, X)``, snapshot 0 = ``u0``."""
    require(nu >= 0 and rho >= 0, f"nu and rho must be >= 0, got {nu}, {rho}")
    u0 = np.asarray(u0, dtype=np.float64)
    n = u0.shape[-1]
    k = angular_wavenumbers(n, length, rfft=True)
    mask = dealias_mask(n, rfft=True)

    def nonlinear(uh: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(uh, n=n)
        return mask * np.fft.rfft(rho * u * (1.0 - u))

    stepper = IFRK4(-nu * k**2, nonlinear)
    n_steps = max(1, math.ceil(dt_save * rho / MAX_RHO_DT))
    return save_snapshots(
        u0,
        np.fft.rfft(u0),
        stepper,
        dt_save,
        n_saves,
        lambda uh: np.fft.irfft(uh, n=n),
        lambda _: n_steps,
    )


def generate(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    *,
    nu: float = 0.5,
    rho: float = 1.0,
    nx: int = 1024,
    t_end: float = 1.0,
    dt_save: float = 0.01,
    batch_size: int = 50,
) -> Path:
    """PDEBench ``ReacDiff_Nu{nu}_Rho{rho}.hdf5``: ``tensor`` ``(samples, 101, nx)``."""

    def solve(ic: SineSumIC, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return solve_diffreact(normalize_unit(ic(x)), nu, rho, dt_save, len(t) - 1)

    attrs = {"Nu": float(nu), "rho": float(rho), "generator": "diffreact1d"}
    return generate_sine_sum_1d(
        out,
        samples,
        seed,
        progress,
        solve,
        attrs,
        nx=nx,
        t_end=t_end,
        dt_save=dt_save,
        batch_size=batch_size,
    )
