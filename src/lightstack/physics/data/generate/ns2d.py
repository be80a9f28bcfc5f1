"""Incompressible 2D Navier-Stokes in vorticity form, periodic ``[0, 1)^2``.

``w_t + u . grad w = nu lap w + f``, ``u = (psi_y, -psi_x)``, ``-lap psi = w``. The defaults
follow the FNO Navier-Stokes benchmark: initial vorticity from the Gaussian random field
``N(0, 7^{3/2} (-lap + 49 I)^{-5/2})``, forcing ``f = A (sin 2pi(x+y) + cos 2pi(x+y))`` with
``A = 0.1`` (``forcing=0`` gives decaying turbulence), ``nu = 1e-3``.

Pseudo-spectral with the 2/3 rule, integrating-factor RK4 (viscosity exact), step size from
the CFL condition at every save. Written in PDEBench's seed-group layout: group ``NNNN`` holds
``data`` ``(T, X, Y, 3)`` with channels ``vorticity, Vx, Vy`` (named in the file attribute
``channels``) and ``grid/x``, ``grid/y``, ``grid/t`` (``T`` entries, as PDEBench's 2D
diffusion-reaction files).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lightstack.physics.data.generate.common import (
    IFRK4,
    Progress,
    angular_wavenumbers,
    cell_centres,
    check_common,
    dealias_mask,
    require,
    save_snapshots,
    save_times,
    write_in_batches,
)
from lightstack.physics.data.pdebench import create_seed_groups

CHANNELS = ("vorticity", "Vx", "Vy")


def _wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Angular wavenumbers of an ``rfft2`` over axes (x, y): ``kx`` (n, 1), ``ky`` (1, m)."""
    kx = angular_wavenumbers(n, 1.0, rfft=False)[:, None]
    ky = angular_wavenumbers(n, 1.0, rfft=True)[None, :]
    return kx, ky


def sample_vorticity(
    rng: np.random.Generator, n_samples: int, n: int, alpha: float = 2.5, tau: float = 7.0
) -> np.ndarray:
    """Mean-free Gaussian random field ``N(0, sigma^2 (-lap + tau^2 I)^{-alpha})``, ``(B, n, n)``.

    ``sigma = tau^{alpha - 1}`` as in the FNO data; values do not depend on ``n`` beyond the
    modes a grid can hold.
    """
    kx, ky = _wavenumbers(n)
    spectrum = tau ** (alpha - 1) * (kx**2 + ky**2 + tau**2) ** (-alpha / 2)
    spectrum[0, 0] = 0.0
    # rfft2 of unit white noise, divided by n, has unit-variance coefficients.
    noise = np.fft.rfft2(rng.standard_normal((n_samples, n, n))) / n
    return np.fft.irfft2(noise * spectrum * n * n, s=(n, n))


def kolmogorov_forcing(n: int, amplitude: float) -> np.ndarray:
    x = cell_centres(n)
    phase = 2 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(phase) + np.cos(phase))


def velocity(wh: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(Vx, Vy)`` from the vorticity's ``rfft2`` ``wh``."""
    kx, ky = _wavenumbers(n)
    k2 = kx**2 + ky**2
    psih = wh / np.where(k2 > 0, k2, 1.0) * (k2 > 0)
    return np.fft.irfft2(1j * ky * psih, s=(n, n)), np.fft.irfft2(-1j * kx * psih, s=(n, n))


def solve_ns2d(
    w0: np.ndarray,
    nu: float,
    dt_save: float,
    n_saves: int,
    forcing: np.ndarray | None = None,
    cfl: float = 0.8,
) -> np.ndarray:
    """Evolve vorticity ``w0`` ``(B, n, n)`` (axes x, y); returns float64 ``(B, T, n, n, 3)``
    with channels ``vorticity, Vx, Vy`` and ``T = n_saves + 1``."""
    require(nu > 0, f"nu must be > 0, got {nu}")
    require(0 < cfl <= 1.2, f"cfl must be in (0, 1.2], got {cfl}")
    w0 = np.asarray(w0, dtype=np.float64)
    n = w0.shape[-1]
    require(w0.shape[-2] == n, f"vorticity must be square (B, n, n), got {w0.shape}")
    kx, ky = _wavenumbers(n)
    k2 = kx**2 + ky**2
    inv_k2 = np.where(k2 > 0, 1.0 / np.where(k2 > 0, k2, 1.0), 0.0)
    mask = dealias_mask(n, rfft=False)[:, None] & dealias_mask(n, rfft=True)[None, :]
    to_u, to_v = 1j * ky * inv_k2, -1j * kx * inv_k2
    fh = np.fft.rfft2(forcing) if forcing is not None else 0.0
    shape = (n, n)

    def nonlinear(wh: np.ndarray) -> np.ndarray:
        u = np.fft.irfft2(to_u * wh, s=shape)
        v = np.fft.irfft2(to_v * wh, s=shape)
        wx = np.fft.irfft2(1j * kx * wh, s=shape)
        wy = np.fft.irfft2(1j * ky * wh, s=shape)
        return fh - mask * np.fft.rfft2(u * wx + v * wy)

    def snapshot(wh: np.ndarray) -> np.ndarray:
        fields = (wh, to_u * wh, to_v * wh)
        return np.stack([np.fft.irfft2(f, s=shape) for f in fields], axis=-1)

    def n_steps(previous: np.ndarray) -> int:
        speed = float((np.abs(previous[..., 1]) + np.abs(previous[..., 2])).max())
        return max(1, math.ceil(dt_save * speed / (cfl * dx)))

    dx = 1.0 / n
    wh = np.fft.rfft2(w0)
    stepper = IFRK4(-nu * k2, nonlinear)
    return save_snapshots(snapshot(wh), wh, stepper, dt_save, n_saves, snapshot, n_steps)


def generate(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    *,
    nu: float = 1e-3,
    forcing: float = 0.1,
    nx: int = 64,
    t_end: float = 20.0,
    dt_save: float = 1.0,
    cfl: float = 0.8,
    batch_size: int = 16,
) -> Path:
    """Seed-group file of ``samples`` groups, each ``data`` ``(21, nx, nx, 3)`` by default."""
    check_common(samples, batch_size, nx=nx)
    n_times, t_coordinate = save_times(t_end, dt_save)
    rng = np.random.default_rng(seed)
    force = kolmogorov_forcing(nx, forcing) if forcing else None
    x = cell_centres(nx)
    attrs = {"nu": float(nu), "forcing": float(forcing), "generator": "ns2d", "seed": int(seed)}
    with create_seed_groups(out, x, x, t_coordinate[:n_times], attrs, CHANNELS) as add:

        def write(batch: slice) -> None:
            w0 = sample_vorticity(rng, batch.stop - batch.start, nx)
            for sample in solve_ns2d(w0, nu, dt_save, n_times - 1, force, cfl):
                add(sample)

        write_in_batches(samples, batch_size, progress, write)
    return out
