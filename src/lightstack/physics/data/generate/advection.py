"""Linear advection ``u_t + beta u_x = 0`` on the periodic interval ``[0, 1)``.

Solved exactly: the random initial condition is a closed-form function (PDEBench's sum of
sines), so every snapshot is that function evaluated at ``(x - beta t) mod 1``; no numerical
diffusion or dispersion. The file attribute ``beta`` holds the speed, as in PDEBench's
``1D_Advection_Sols_beta{beta}.hdf5``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lightstack.physics.data.generate.common import (
    Progress,
    SineSumIC,
    generate_sine_sum_1d,
)


def advect_exact(
    u0: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    beta: float,
    times: np.ndarray,
    length: float = 1.0,
) -> np.ndarray:
    """Exact solution ``(B, T, X)`` for a periodic initial condition ``u0(x) -> (B, X)``."""
    return np.stack([u0(np.mod(x - beta * t, length)) for t in times], axis=1)


def generate(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    *,
    beta: float = 0.1,
    nx: int = 1024,
    t_end: float = 2.0,
    dt_save: float = 0.01,
    batch_size: int = 50,
) -> Path:
    """PDEBench ``1D_Advection_Sols_beta{beta}.hdf5``: ``tensor`` ``(samples, 201, nx)``."""

    def solve(ic: SineSumIC, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return advect_exact(ic, x, beta, t)

    attrs = {"beta": float(beta), "generator": "advection1d"}
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
