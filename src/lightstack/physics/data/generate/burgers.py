"""Viscous Burgers' equation in PDEBench's convention.

``u_t + (u^2 / 2)_x = (nu / pi) u_xx`` on the periodic interval ``[0, 1)``; the file attribute
``Nu`` holds ``nu`` (PDEBench's file names and attrs use this ``nu``, the diffusion coefficient
actually applied is ``nu / pi``). Pseudo-spectral in space with the 2/3 rule, integrating-factor
RK4 in time (diffusion exact), step size from the advective CFL condition, recomputed at every
save interval.

The solver resolves the viscous shocks only while their width ``~ 4 (nu / pi) / jump`` spans a
few grid cells: ``nu = 0.01`` at ``nx = 1024`` is fine; much smaller ``nu`` needs a finer grid.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from lightstack.physics.data.generate.common import (
    IFRK4,
    Progress,
    SineSumIC,
    angular_wavenumbers,
    dealias_mask,
    generate_sine_sum_1d,
    require,
    save_snapshots,
)


def solve_burgers(
    u0: np.ndarray,
    nu: float,
    dt_save: float,
    n_saves: int,
    cfl: float = 0.8,
    length: float = 1.0,
) -> np.ndarray:
    """Evolve ``u0`` ``(B, X)``; returns float64 ``(B, n_saves + 1, X)``, snapshot 0 = ``u0``.

    ``cfl`` bounds ``dt * max|u| / dx``; RK4 with a spectral derivative is stable up to about
    ``2.8 * 3 / (2 pi) ~ 1.35`` under the 2/3 rule, 0.8 leaves a margin.
    """
    require(nu > 0, f"nu must be > 0, got {nu}")
    require(0 < cfl <= 1.2, f"cfl must be in (0, 1.2], got {cfl}")
    u0 = np.asarray(u0, dtype=np.float64)
    n = u0.shape[-1]
    dx = length / n
    k = angular_wavenumbers(n, length, rfft=True)
    advect = -0.5j * k * dealias_mask(n, rfft=True)

    def nonlinear(uh: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(uh, n=n)
        return advect * np.fft.rfft(u * u)

    # The top tenth of the retained band must stay empty, else shocks are under-resolved.
    top = slice(int(0.9 * n / 3), math.ceil(n / 3))
    tail = 0.0

    def snapshot(uh: np.ndarray) -> np.ndarray:
        nonlocal tail
        magnitude = np.abs(uh)
        tail = max(tail, float((magnitude[:, top].max(-1) / magnitude.max(-1).clip(1e-300)).max()))
        return np.fft.irfft(uh, n=n)

    def n_steps(previous: np.ndarray) -> int:
        return max(1, math.ceil(dt_save * float(np.abs(previous).max()) / (cfl * dx)))

    stepper = IFRK4(-(nu / np.pi) * k**2, nonlinear)
    out = save_snapshots(u0, np.fft.rfft(u0), stepper, dt_save, n_saves, snapshot, n_steps)
    if tail > 1e-4:
        warnings.warn(
            f"Burgers solution under-resolved (nx={n}, nu={nu}): the top of the spectrum "
            f"reaches {tail:.1e} of its peak; raise nx or nu",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


def generate(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    *,
    nu: float = 0.01,
    nx: int = 1024,
    t_end: float = 2.0,
    dt_save: float = 0.01,
    cfl: float = 0.8,
    batch_size: int = 50,
) -> Path:
    """PDEBench ``1D_Burgers_Sols_Nu{nu}.hdf5``: ``tensor`` ``(samples, 201, nx)`` by default."""

    def solve(ic: SineSumIC, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return solve_burgers(ic(x), nu, dt_save, len(t) - 1, cfl)

    attrs = {"Nu": float(nu), "generator": "burgers1d"}
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
