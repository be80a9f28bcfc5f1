"""Pieces shared by the built-in solvers: grids, save times, PDEBench's random initial
condition, the integrating-factor RK4 step, batching and the 1D writer glue."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightstack.physics.data.pdebench import create_1d

Progress = Callable[[int, int], None]


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def check_common(samples: int, batch_size: int, **sizes: int) -> None:
    """Validate the arguments every generator takes; ``sizes`` are grid sizes (name=value)."""
    require(samples >= 1, f"samples must be >= 1, got {samples}")
    require(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
    for name, value in sizes.items():
        require(value >= 4, f"{name} must be >= 4, got {value}")


def cell_centres(n: int, length: float = 1.0) -> np.ndarray:
    """Cell-centre coordinates of ``n`` equal cells on ``[0, length)`` (PDEBench's ``xc``)."""
    return (np.arange(n) + 0.5) * (length / n)


def save_times(t_end: float, dt_save: float) -> tuple[int, np.ndarray]:
    """Number of snapshots and PDEBench's ``t-coordinate`` (one entry more than snapshots).

    Snapshot ``i`` is the state at ``i * dt_save``; the first is the initial condition.
    """
    require(dt_save > 0 and t_end > 0, f"t_end and dt_save must be > 0, got {t_end}, {dt_save}")
    n_steps = round(t_end / dt_save)
    require(
        n_steps >= 1 and math.isclose(n_steps * dt_save, t_end, rel_tol=1e-9),
        f"t_end ({t_end}) must be a whole multiple of dt_save ({dt_save})",
    )
    return n_steps + 1, np.arange(n_steps + 2) * dt_save


def batches(n: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@dataclass(frozen=True)
class SineSumIC:
    """PDEBench's random 1D initial condition (``init_multi`` in its data-generation utils).

    Each sample sums ``k_tot`` sine modes ``A_k sin(k_x x + phi_k)``: ``n_choices`` wavenumber
    indices are drawn from ``1..k_tot`` and a mode's wavenumber is its index times the number of
    times it was drawn, so the modes never drawn are constants ``A_k sin(phi_k)`` (PDEBench
    does the same). Then, with probability 0.1 each, the absolute value is taken and a tanh
    window ``[x_L, x_R]`` is applied; the sign is flipped at random. Wavenumbers use the period
    ``length`` so the field is exactly periodic.
    """

    amplitude: np.ndarray  # (B, K)
    wavenumber: np.ndarray  # (B, K), angular
    phase: np.ndarray  # (B, K)
    use_abs: np.ndarray  # (B,) bool
    sign: np.ndarray  # (B,) +-1
    use_window: np.ndarray  # (B,) bool
    x_left: np.ndarray  # (B,)
    x_right: np.ndarray  # (B,)
    transition: float = 0.01

    @classmethod
    def sample(
        cls,
        rng: np.random.Generator,
        n: int,
        k_tot: int = 4,
        n_choices: int = 2,
        p_abs: float = 0.1,
        p_window: float = 0.1,
        length: float = 1.0,
    ) -> SineSumIC:
        counts = np.zeros((n, k_tot))
        chosen = rng.integers(0, k_tot, size=(n, n_choices))
        np.add.at(counts, (np.arange(n)[:, None], chosen), 1)
        return cls(
            amplitude=rng.uniform(size=(n, k_tot)),
            wavenumber=2 * np.pi * np.arange(1, k_tot + 1) * counts / length,
            phase=2 * np.pi * rng.uniform(size=(n, k_tot)),
            use_abs=rng.uniform(size=n) < p_abs,
            sign=rng.choice(np.array([1.0, -1.0]), size=n),
            use_window=rng.uniform(size=n) < p_window,
            x_left=rng.uniform(0.1, 0.45, size=n),
            x_right=rng.uniform(0.55, 0.9, size=n),
        )

    def __len__(self) -> int:
        return self.amplitude.shape[0]

    def __getitem__(self, index: slice) -> SineSumIC:
        return SineSumIC(
            self.amplitude[index],
            self.wavenumber[index],
            self.phase[index],
            self.use_abs[index],
            self.sign[index],
            self.use_window[index],
            self.x_left[index],
            self.x_right[index],
            self.transition,
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Evaluate every sample at the points ``x`` (shape ``(X,)``, in ``[0, length)``)."""
        phase = self.wavenumber[:, :, None] * x[None, None, :] + self.phase[:, :, None]
        u = np.sum(self.amplitude[:, :, None] * np.sin(phase), axis=1)
        u = np.where(self.use_abs[:, None], np.abs(u), u) * self.sign[:, None]
        window = 0.5 * (
            np.tanh((x[None, :] - self.x_left[:, None]) / self.transition)
            - np.tanh((x[None, :] - self.x_right[:, None]) / self.transition)
        )
        return np.where(self.use_window[:, None], u * window, u)


def normalize_unit(u: np.ndarray) -> np.ndarray:
    """Shift and scale each sample (last axis) to ``[0, 1]`` as PDEBench's ``if_norm`` does."""
    low = u.min(axis=-1, keepdims=True)
    span = u.max(axis=-1, keepdims=True) - low
    return np.where(span > 0, (u - low) / np.where(span > 0, span, 1.0), 0.0)


def dealias_mask(n: int, rfft: bool) -> np.ndarray:
    """2/3-rule mask over FFT indices of an ``n``-point axis (``rfft``: half spectrum)."""
    index = np.abs(np.fft.rfftfreq(n, 1.0 / n) if rfft else np.fft.fftfreq(n, 1.0 / n))
    return index < n / 3


def angular_wavenumbers(n: int, length: float, rfft: bool) -> np.ndarray:
    d = length / n
    freq = np.fft.rfftfreq(n, d) if rfft else np.fft.fftfreq(n, d)
    return 2 * np.pi * freq


class IFRK4:
    """Classical RK4 with an integrating factor for ``du/dt = L u + N(u)`` in spectral space.

    ``L`` is diagonal (``linear``), so stiff diffusion is integrated exactly and the step size
    only has to resolve ``N`` (advection CFL / reaction rate).
    """

    def __init__(self, linear: np.ndarray, nonlinear: Callable[[np.ndarray], np.ndarray]) -> None:
        self.linear = linear
        self.nonlinear = nonlinear
        # exp(L dt) and exp(L dt / 2), recomputed whenever the step size changes.
        self._dt = math.nan
        self._e = self._e2 = np.ones_like(linear)

    def advance(self, uh: np.ndarray, interval: float, n_steps: int) -> np.ndarray:
        """Take ``n_steps`` equal steps covering ``interval``."""
        dt = interval / n_steps
        if dt != self._dt:
            self._dt = dt
            self._e = np.exp(self.linear * dt)
            self._e2 = np.exp(self.linear * (dt / 2))
        e, e2, n = self._e, self._e2, self.nonlinear
        for _ in range(n_steps):
            k1 = n(uh)
            k2 = n(e2 * (uh + (dt / 2) * k1))
            k3 = n(e2 * uh + (dt / 2) * k2)
            k4 = n(e * uh + dt * (e2 * k3))
            uh = e * uh + (dt / 6) * (e * k1 + 2 * e2 * (k2 + k3) + k4)
        return uh


def save_snapshots(
    initial: np.ndarray,
    state: np.ndarray,
    stepper: IFRK4,
    dt_save: float,
    n_saves: int,
    snapshot: Callable[[np.ndarray], np.ndarray],
    n_steps: Callable[[np.ndarray], int],
) -> np.ndarray:
    """The time loop of the spectral solvers: save, advance by ``dt_save``, save again.

    ``initial`` ``(B, ...)`` is snapshot 0 and ``state`` its spectral form; after each interval
    ``snapshot(state)`` is saved. ``n_steps(previous snapshot)`` chooses the number of equal
    steps of each interval (from a CFL condition, or a constant). Returns float64
    ``(B, n_saves + 1, ...)``.
    """
    out = np.empty((initial.shape[0], n_saves + 1, *initial.shape[1:]))
    out[:, 0] = initial
    for i in range(1, n_saves + 1):
        state = stepper.advance(state, dt_save, n_steps(out[:, i - 1]))
        out[:, i] = snapshot(state)
    return out


def write_in_batches(
    samples: int,
    batch_size: int,
    progress: Progress | None,
    write: Callable[[slice], None],
) -> None:
    """Call ``write(batch)`` for consecutive sample slices, reporting progress after each."""
    for batch in batches(samples, batch_size):
        write(batch)
        if progress is not None:
            progress(batch.stop, samples)


def generate_sine_sum_1d(
    out: Path,
    samples: int,
    seed: int,
    progress: Progress | None,
    solve: Callable[[SineSumIC, np.ndarray, np.ndarray], np.ndarray],
    attrs: dict[str, Any],
    *,
    nx: int,
    t_end: float,
    dt_save: float,
    batch_size: int,
) -> Path:
    """A PDEBench 1D file of ``samples`` trajectories from PDEBench's sine-sum initial states.

    ``solve(ic, x, t)`` maps a batch of initial conditions, the cell centres and the save
    times (first snapshot at ``t[0] = 0``) to ``(B, len(t), nx)``; batches are written as they
    are solved. ``attrs`` (the PDE parameters and the generator's name) get the seed added.
    """
    check_common(samples, batch_size, nx=nx)
    n_times, t_coordinate = save_times(t_end, dt_save)
    x = cell_centres(nx)
    ic = SineSumIC.sample(np.random.default_rng(seed), samples)
    attrs = {**attrs, "seed": int(seed)}
    with create_1d(out, samples, n_times, x, t_coordinate, attrs) as tensor:

        def write(batch: slice) -> None:
            tensor[batch] = solve(ic[batch], x, t_coordinate[:n_times]).astype(np.float32)

        write_in_batches(samples, batch_size, progress, write)
    return out
