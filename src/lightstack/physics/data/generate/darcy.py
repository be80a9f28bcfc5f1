"""Steady 2D Darcy flow ``-div(a grad u) = f`` on ``[0, 1]^2`` with ``u = 0`` on the boundary.

As in PDEBench's ``2D_DarcyFlow_beta{beta}`` files: ``f = beta`` (file attribute ``beta``), the
coefficient field ``a`` is stored as ``nu`` ``(N, X, Y)`` and the solution as ``tensor``
``(N, 1, X, Y)`` on cell centres. ``a`` is piecewise constant as in the FNO Darcy data: a
Gaussian random field ``N(0, (-lap + tau^2 I)^{-alpha})`` (``alpha = 2``, ``tau = 3``),
thresholded at 0 to ``a_high = 12`` / ``a_low = 3``.

Discretisation: cell-centred finite volumes (the 5-point stencil) with harmonic-mean face
coefficients and the Dirichlet value imposed on the boundary faces (half-cell distance).
Solved by conjugate gradients, batched over samples, preconditioned with the exact inverse of
the mean-coefficient Laplacian (fast diagonalisation), so the iteration count depends only on
the coefficient contrast, not on the grid size.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from lightstack.physics.data.generate.common import (
    Progress,
    cell_centres,
    check_common,
    require,
    write_in_batches,
)
from lightstack.physics.data.pdebench import create_darcy


def sample_coefficients(
    rng: np.random.Generator,
    n_samples: int,
    n: int,
    alpha: float = 2.0,
    tau: float = 3.0,
    a_high: float = 12.0,
    a_low: float = 3.0,
) -> np.ndarray:
    """Thresholded Gaussian random fields ``(B, n, n)`` taking the values ``a_high``/``a_low``.

    The field is drawn on a periodic box twice as large and cropped, so it is not periodic.
    """
    m = 2 * n
    kx = np.fft.fftfreq(m, 1.0 / n)[:, None]  # box of side 2: frequencies in cycles per unit
    ky = np.fft.rfftfreq(m, 1.0 / n)[None, :]
    spectrum = (4 * np.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2)
    spectrum[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n_samples, m, m))) * spectrum, s=(m, m))
    return np.where(field[:, :n, :n] >= 0, a_high, a_low)


def _face_coefficients(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Face coefficients along x ``(B, n+1, n)`` and y ``(B, n, n+1)``; boundary faces carry
    ``2 a`` because the boundary value sits half a cell away."""

    def faces(c: np.ndarray, axis: int) -> np.ndarray:
        lo = np.take(c, [0], axis=axis)
        hi = np.take(c, [-1], axis=axis)
        left, right = np.delete(c, -1, axis=axis), np.delete(c, 0, axis=axis)
        inner = 2 * left * right / (left + right)
        return np.concatenate([2 * lo, inner, 2 * hi], axis=axis)

    return faces(a, -2), faces(a, -1)


def darcy_operator(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The discrete ``-div(a grad u)`` of ``u`` ``(B, n, n)`` with zero boundary values."""
    return _apply(*_face_coefficients(a), u)


def _apply(ax: np.ndarray, ay: np.ndarray, u: np.ndarray) -> np.ndarray:
    n = u.shape[-1]
    ux = np.pad(u, ((0, 0), (1, 1), (0, 0)))
    uy = np.pad(u, ((0, 0), (0, 0), (1, 1)))
    flux_x = ax * np.diff(ux, axis=-2)
    flux_y = ay * np.diff(uy, axis=-1)
    return -(np.diff(flux_x, axis=-2) + np.diff(flux_y, axis=-1)) * n * n


@cache
def _laplacian_eigen(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the 1D cell-centred ``-d2/dx2`` with Dirichlet faces."""
    t = 2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)
    t[0, 0] = t[-1, -1] = 3.0
    lam, vec = np.linalg.eigh(t * n * n)
    return lam, vec


def solve_darcy(
    a: np.ndarray, f: float | np.ndarray, tol: float = 1e-10, max_iter: int = 500
) -> np.ndarray:
    """Solve ``-div(a grad u) = f``, ``u = 0`` on the boundary, for ``a`` ``(B, n, n)`` > 0.

    ``f`` is a number or an array broadcastable to ``a``. Stops when every sample's residual is
    below ``tol`` relative to its right-hand side.
    """
    a = np.asarray(a, dtype=np.float64)
    require(a.ndim == 3 and a.shape[1] == a.shape[2], f"a must be (B, n, n), got {a.shape}")
    require(bool((a > 0).all()), "the coefficient a must be > 0 everywhere")
    n = a.shape[-1]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)
    ax, ay = _face_coefficients(a)
    lam, vec = _laplacian_eigen(n)
    inv_eig = 1.0 / (lam[:, None] + lam[None, :])
    scale = 1.0 / a.mean(axis=(1, 2), keepdims=True)

    def precondition(r: np.ndarray) -> np.ndarray:
        return scale * (vec @ ((vec.T @ r @ vec) * inv_eig) @ vec.T)

    def dot(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.einsum("bij,bij->b", p, q)[:, None, None]

    u = np.zeros_like(a)
    r = rhs.copy()
    z = precondition(r)
    p = z.copy()
    rz = dot(r, z)
    norm_rhs = np.sqrt(dot(rhs, rhs)).clip(1e-300)
    for _ in range(max_iter):
        if (np.sqrt(dot(r, r)) <= tol * norm_rhs).all():
            return u
        ap = _apply(ax, ay, p)
        p_ap = dot(p, ap)
        step = np.divide(rz, p_ap, out=np.zeros_like(rz), where=p_ap != 0)
        u += step * p
        r -= step * ap
        z = precondition(r)
        rz_new = dot(r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz != 0)
        p = z + beta * p
        rz = rz_new
    raise RuntimeError(f"Darcy solve did not reach tol={tol} in {max_iter} CG iterations")


def generate(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    *,
    beta: float = 1.0,
    nx: int = 128,
    a_high: float = 12.0,
    a_low: float = 3.0,
    batch_size: int = 32,
) -> Path:
    """PDEBench ``2D_DarcyFlow_beta{beta}``: ``tensor`` ``(samples, 1, nx, nx)`` and ``nu``."""
    check_common(samples, batch_size, nx=nx)
    require(a_high > 0 and a_low > 0, f"a_high and a_low must be > 0, got {a_high}, {a_low}")
    rng = np.random.default_rng(seed)
    x = cell_centres(nx)
    attrs = {"beta": float(beta), "generator": "darcy2d", "seed": int(seed)}
    with create_darcy(out, samples, x, x, attrs) as (tensor, nu):

        def write(batch: slice) -> None:
            a = sample_coefficients(rng, batch.stop - batch.start, nx, a_high=a_high, a_low=a_low)
            nu[batch] = a.astype(np.float32)
            tensor[batch] = solve_darcy(a, beta)[:, None].astype(np.float32)

        write_in_batches(samples, batch_size, progress, write)
    return out
