"""Built-in solvers: verified against exact solutions, reproducible, written in PDEBench layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from lightstack.physics.data.generate import GENERATORS, generate, parameters
from lightstack.physics.data.generate.burgers import solve_burgers
from lightstack.physics.data.generate.common import SineSumIC, cell_centres, save_times
from lightstack.physics.data.generate.darcy import darcy_operator, sample_coefficients, solve_darcy
from lightstack.physics.data.generate.diffreact import solve_diffreact
from lightstack.physics.data.generate.ns2d import sample_vorticity, solve_ns2d
from lightstack.physics.data.pdebench import PDEBenchReader, check_finite, inspect_file

# Tiny settings per generator: each file takes well under a second.
TINY = {
    "burgers1d": {"nx": 64, "nu": 0.5, "t_end": 0.1},
    "advection1d": {"nx": 32, "t_end": 0.1},
    "diffreact1d": {"nx": 32, "t_end": 0.1},
    "ns2d": {"nx": 16, "t_end": 1.0, "dt_save": 0.5},
    "darcy2d": {"nx": 16},
}


def _read_all(path: Path) -> list[np.ndarray]:
    with h5py.File(path) as f:
        out: list[np.ndarray] = []
        f.visititems(
            lambda name, obj: out.append(obj[()]) if isinstance(obj, h5py.Dataset) else None
        )
        return out


# ----------------------------------------------------------------------------- verification


def test_advection_is_the_exact_shifted_profile(tmp_path: Path) -> None:
    # beta * dt_save = 1/64 = one cell per snapshot, so snapshot k is the IC rolled by k cells.
    path = generate("advection1d", tmp_path / "adv.h5", 3, seed=1, nx=64, beta=1.5625, t_end=0.2)
    u = PDEBenchReader(path).read(2)[..., 0]
    assert u.shape == (21, 64)
    for k in range(21):
        # Only float32 storage rounding separates the two (|u| <= 4).
        np.testing.assert_allclose(u[k], np.roll(u[0], k), atol=2e-6)
    assert inspect_file(path).attrs["beta"] == 1.5625


def _cole_hopf(u_amplitude: float, viscosity: float, x: np.ndarray, t: float) -> np.ndarray:
    """Exact viscous Burgers solution for u0 = A sin(2 pi x) on [0, 1) via Cole-Hopf.

    u = -2 v phi_x / phi with phi_t = v phi_xx and phi0 = exp(A cos(2 pi x) / (4 pi v));
    phi is smooth and strictly positive, so its Fourier series is exact on a fine grid.
    """
    fine = cell_centres(4096)
    phi0 = np.exp(u_amplitude * np.cos(2 * np.pi * fine) / (4 * np.pi * viscosity))
    k = 2 * np.pi * np.fft.rfftfreq(fine.size, 1 / fine.size)
    phi_hat = np.fft.rfft(phi0) * np.exp(-viscosity * k**2 * t)
    # Evaluate the Fourier series at x directly (x need not lie on the fine grid).
    modes = np.exp(1j * np.outer(x - fine[0], k))
    weights = np.where(k == 0, 1.0, 2.0) / fine.size
    phi = (modes * phi_hat * weights).real.sum(axis=1)
    phi_x = (modes * (1j * k) * phi_hat * weights).real.sum(axis=1)
    return -2 * viscosity * phi_x / phi


def test_burgers_matches_cole_hopf() -> None:
    nu, nx = 0.1, 128  # PDEBench's nu: the equation's viscosity is nu / pi
    x = cell_centres(nx)
    u = solve_burgers(np.sin(2 * np.pi * x)[None], nu, dt_save=0.1, n_saves=5)
    for i, t in enumerate([0.0, 0.1, 0.2, 0.3, 0.4, 0.5]):
        exact = _cole_hopf(1.0, nu / np.pi, x, t)
        # Spectral in space (smooth solution: ~1e-12); RK4 in time with dt = 0.8 dx / max|u|
        # ~ 6e-3 gives 5e-7 (it falls 13x when dt halves, i.e. as dt^4). Using nu instead of
        # nu / pi is off by 0.4.
        np.testing.assert_allclose(u[0, i], exact, atol=2e-6)


def test_burgers_default_resolution_is_converged() -> None:
    """PDEBench's setting (nu = 0.01, nx = 1024) against the same solver at nx = 2048."""
    ic = SineSumIC.sample(np.random.default_rng(3), 2)
    coarse = solve_burgers(ic(cell_centres(1024)), 0.01, dt_save=0.25, n_saves=4)
    fine = solve_burgers(ic(cell_centres(2048)), 0.01, dt_save=0.25, n_saves=4)
    # Fourier-restrict the fine run to the coarse cell centres (shifted by a quarter cell).
    k = np.arange(513)
    shift = np.exp(2j * np.pi * k * (0.5 / 1024 - 0.5 / 2048))
    restricted = np.fft.irfft(np.fft.rfft(fine, axis=-1)[..., :513] * shift, n=1024, axis=-1) / 2
    # Steep fronts have formed by t = 1; the two grids still agree to ~1e-6 of max|u| ~ 2.
    assert np.abs(restricted - coarse).max() < 1e-4


def test_burgers_warns_when_under_resolved() -> None:
    ic = SineSumIC.sample(np.random.default_rng(0), 4)
    with pytest.warns(RuntimeWarning, match="under-resolved"):
        solve_burgers(ic(cell_centres(64)), 0.001, dt_save=0.1, n_saves=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_burgers(ic(cell_centres(64)), 1.0, dt_save=0.1, n_saves=5)


def test_diffusion_reaction_uniform_state_follows_the_logistic_ode() -> None:
    u0, rho = 0.2, 5.0
    u = solve_diffreact(np.full((1, 32), u0), nu=0.5, rho=rho, dt_save=0.05, n_saves=20)
    t = np.arange(21) * 0.05
    exact = 1 / (1 + (1 / u0 - 1) * np.exp(-rho * t))
    # RK4 with rho * dt = 0.05: local error ~(rho dt)^5 / 120 ~ 3e-9 per step.
    np.testing.assert_allclose(u[0], np.broadcast_to(exact[:, None], (21, 32)), atol=1e-7)


def test_pure_diffusion_decays_each_mode_exactly() -> None:
    x = cell_centres(32)
    u = solve_diffreact(np.sin(2 * np.pi * x)[None], nu=0.5, rho=0.0, dt_save=0.1, n_saves=3)
    decay = np.exp(-0.5 * (2 * np.pi) ** 2 * 0.3)
    np.testing.assert_allclose(u[0, 3], decay * np.sin(2 * np.pi * x), atol=1e-12)


def test_diffusion_reaction_file_stays_in_unit_interval(tmp_path: Path) -> None:
    path = generate("diffreact1d", tmp_path / "rd.h5", 4, seed=0, nx=64)
    with h5py.File(path) as f:
        assert f["tensor"].shape == (4, 101, 64) and f["t-coordinate"].shape == (102,)
        u = f["tensor"][()]
        assert (f.attrs["Nu"], f.attrs["rho"]) == (0.5, 1.0)
    # Fisher-KPP keeps [0, 1] invariant; the IC is normalised to exactly [0, 1].
    assert u.min() >= -1e-6 and u.max() <= 1 + 1e-6
    np.testing.assert_allclose(u[:, 0].min(axis=1), 0.0, atol=1e-7)


def test_navier_stokes_taylor_green_vortex_decays_exactly() -> None:
    n, nu = 32, 0.01
    x = cell_centres(n)
    sx, cx = np.sin(2 * np.pi * x)[:, None], np.cos(2 * np.pi * x)[:, None]
    sy, cy = sx.T, cx.T
    out = solve_ns2d((sx * sy)[None], nu, dt_save=0.25, n_saves=4)
    for i in range(5):
        decay = np.exp(-2 * nu * (2 * np.pi) ** 2 * 0.25 * i)
        # Nonlinear term vanishes identically, viscosity is integrated exactly: round-off only.
        np.testing.assert_allclose(out[0, i, ..., 0], decay * sx * sy, atol=1e-10)
        np.testing.assert_allclose(out[0, i, ..., 1], decay * sx * cy / (4 * np.pi), atol=1e-10)
        np.testing.assert_allclose(out[0, i, ..., 2], -decay * cx * sy / (4 * np.pi), atol=1e-10)


def test_navier_stokes_unforced_energy_decays() -> None:
    w0 = sample_vorticity(np.random.default_rng(0), 2, 32)
    out = solve_ns2d(w0, 1e-3, dt_save=1.0, n_saves=5)
    energy = (out[..., 1] ** 2 + out[..., 2] ** 2).mean(axis=(2, 3))
    # Kinetic energy can only decrease without forcing (viscous dissipation), and slowly.
    assert (np.diff(energy, axis=1) < 0).all()
    assert (energy[:, -1] > 0.5 * energy[:, 0]).all()


def _manufactured_error(n: int) -> float:
    x = cell_centres(n)
    exact = np.sin(np.pi * x)[:, None] * np.sin(np.pi * x)[None, :]
    u = solve_darcy(np.ones((1, n, n)), 2 * np.pi**2 * exact[None])
    return float(np.abs(u[0] - exact).max())


def test_darcy_constant_coefficient_matches_manufactured_solution() -> None:
    coarse, fine = _manufactured_error(16), _manufactured_error(32)
    # Second-order scheme: halving h divides the error by ~4 (measured 3.2e-3 -> 8.0e-4).
    assert fine < 1e-3 and coarse / fine > 3.5


def test_darcy_random_coefficient_residual_symmetry_and_positivity() -> None:
    a = sample_coefficients(np.random.default_rng(0), 3, 24)
    assert set(np.unique(a)) == {3.0, 12.0}
    u = solve_darcy(a, 1.0)
    # CG stops at relative residual 1e-10.
    np.testing.assert_allclose(darcy_operator(a, u), 1.0, atol=1e-8)
    # The discrete problem is isotropic: transposing the coefficient transposes the solution.
    np.testing.assert_allclose(
        solve_darcy(a.transpose(0, 2, 1), 1.0), u.transpose(0, 2, 1), atol=1e-10
    )
    # Maximum principle: f > 0 with zero boundary values gives u > 0 inside.
    assert (u > 0).all()


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_file_other_seed_differs(tmp_path: Path, name: str) -> None:
    a = generate(name, tmp_path / "a.h5", 3, seed=7, batch_size=2, **TINY[name])
    b = generate(name, tmp_path / "b.h5", 3, seed=7, batch_size=2, **TINY[name])
    c = generate(name, tmp_path / "c.h5", 3, seed=8, batch_size=2, **TINY[name])
    for x, y in zip(_read_all(a), _read_all(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, y) for x, y in zip(_read_all(a), _read_all(c), strict=True))
    check_finite(a)


def test_burgers_file_has_pdebench_keys_shapes_and_dtypes(tmp_path: Path) -> None:
    path = generate("burgers1d", tmp_path / "1D_Burgers_Sols_Nu0.5.hdf5", 2, seed=0, nx=64, nu=0.5)
    with h5py.File(path) as f:
        assert set(f.keys()) == {"tensor", "x-coordinate", "t-coordinate"}
        assert f["tensor"].shape == (2, 201, 64) and f["tensor"].dtype == np.float32
        assert f["t-coordinate"].shape == (202,) and f["t-coordinate"].dtype == np.float32
        np.testing.assert_allclose(f["t-coordinate"][()], np.arange(202) * 0.01, atol=1e-6)
        np.testing.assert_allclose(f["x-coordinate"][()], (np.arange(64) + 0.5) / 64)
        assert f.attrs["Nu"] == 0.5


def test_ns2d_and_darcy_files(tmp_path: Path) -> None:
    path = generate("ns2d", tmp_path / "ns.h5", 2, seed=0, nx=16, t_end=2.0, dt_save=0.5)
    info = inspect_file(path)
    assert info.layout == "seed_groups" and info.channels == ("vorticity", "Vx", "Vy")
    assert (info.n_samples, info.n_times, info.spatial_shape) == (2, 5, (16, 16))
    np.testing.assert_allclose(info.coords["t"], np.arange(5) * 0.5)

    path = generate("darcy2d", tmp_path / "darcy.h5", 3, seed=0, nx=16, beta=2.0)
    reader = PDEBenchReader(path)
    assert reader.info.layout == "darcy" and reader.info.attrs["beta"] == 2.0
    a = reader.read_coefficient(1)[..., 0].astype(np.float64)
    u = reader.read(1)[0, ..., 0].astype(np.float64)
    # float32 storage limits the residual to ~1e-6 relative.
    np.testing.assert_allclose(darcy_operator(a[None], u[None])[0], 2.0, rtol=1e-4)


def test_progress_is_reported_per_batch(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        "advection1d",
        tmp_path / "p.h5",
        5,
        seed=0,
        progress=lambda d, t: calls.append((d, t)),
        batch_size=2,
        **TINY["advection1d"],
    )
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_registry_rejects_unknown_names_and_parameters(tmp_path: Path) -> None:
    assert sorted(GENERATORS) == ["advection1d", "burgers1d", "darcy2d", "diffreact1d", "ns2d"]
    assert parameters("burgers1d")["nu"] == 0.01 and parameters("burgers1d")["nx"] == 1024
    with pytest.raises(ValueError, match=r"unknown generator 'heat'.*burgers1d"):
        generate("heat", tmp_path / "x.h5", 1, 0)
    with pytest.raises(ValueError, match=r"burgers1d: unknown parameter\(s\) \['viscosity'\]"):
        generate("burgers1d", tmp_path / "x.h5", 1, 0, viscosity=0.1)
    with pytest.raises(ValueError, match="whole multiple"):
        generate("advection1d", tmp_path / "x.h5", 1, 0, t_end=0.105)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        generate("darcy2d", tmp_path / "x.h5", 0, 0)
    assert not any(tmp_path.iterdir())


def test_save_times_follow_pdebench() -> None:
    n_times, t = save_times(2.0, 0.01)
    assert n_times == 201 and t.shape == (202,)
    np.testing.assert_allclose(t[[0, 200, 201]], [0.0, 2.0, 2.01])
