"""Built-in PDE solvers that write PDEBench-format HDF5 files.

``generate(name, out, samples, seed, progress=None, **params)`` runs one of :data:`GENERATORS`
and returns the written path. The same name, seed and parameters give identical files.

- ``burgers1d``: ``u_t + (u^2/2)_x = (nu/pi) u_xx``; 1d_tensor ``(N, 201, 1024)``, attr ``Nu``.
- ``advection1d``: ``u_t + beta u_x = 0`` (exact); 1d_tensor ``(N, 201, 1024)``, attr ``beta``.
- ``diffreact1d``: ``u_t = nu u_xx + rho u (1 - u)``; 1d_tensor ``(N, 101, 1024)``, attrs ``Nu``,
  ``rho``.
- ``ns2d``: incompressible 2D Navier-Stokes (vorticity form); seed_groups ``(21, 64, 64, 3)``
  with channels ``vorticity, Vx, Vy``, attrs ``nu``, ``forcing``.
- ``darcy2d``: ``-div(a grad u) = beta``, ``u = 0`` on the boundary; darcy ``(N, 1, 128, 128)``
  plus the coefficient ``nu``, attr ``beta``.

Shapes are those of the defaults; every file also carries the attrs ``generator`` and ``seed``.
Every generator takes its resolution as ``nx``, the cells per spatial axis.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightstack.physics.data.generate import advection, burgers, darcy, diffreact, ns2d
from lightstack.physics.data.generate.common import Progress
from lightstack.physics.data.pdebench import layout_suffix

GENERATORS: dict[str, Callable[..., Path]] = {
    "burgers1d": burgers.generate,
    "advection1d": advection.generate,
    "diffreact1d": diffreact.generate,
    "ns2d": ns2d.generate,
    "darcy2d": darcy.generate,
}

_COMMON = ("out", "samples", "seed", "progress")

# The layout each generator writes; it decides the default file suffix.
WRITES = {
    "burgers1d": "1d_tensor",
    "advection1d": "1d_tensor",
    "diffreact1d": "1d_tensor",
    "ns2d": "seed_groups",
    "darcy2d": "darcy",
}


def default_filename(name: str) -> str:
    """``<name>.hdf5``, or ``<name>.h5`` for seed-group files: PDEBench's loaders pick their
    branch from the name (``.h5`` means seed groups), so its tools read the file unchanged."""
    _lookup(name)
    return name + layout_suffix(WRITES[name])


def parameters(name: str) -> dict[str, Any]:
    """The PDE/grid parameters of generator ``name`` and their defaults."""
    fn = _lookup(name)
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in _COMMON
    }


def suffix_warning(name: str, path: Path) -> str | None:
    """A note when ``path``'s suffix would send PDEBench's loaders down the wrong branch."""
    expected = layout_suffix(WRITES[name])
    # PDEBench tests ``filename[-2:] == "h5"``, so "data.xh5" counts as seed groups too.
    if (path.name[-2:] == "h5") == (expected == ".h5"):
        return None
    return (
        f"note: {path.name} holds {WRITES[name]} data; PDEBench's loaders read a name ending "
        f"in h5 as seed groups and any other as one array, so they expect *{expected}"
    )


def generate(
    name: str,
    out: str | Path,
    samples: int,
    seed: int,
    progress: Progress | None = None,
    **params: Any,
) -> Path:
    """Write ``samples`` solutions of PDE ``name`` to ``out`` (atomically) and return the path.

    ``progress(done, total)`` is called after each batch of samples.
    """
    known = parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {unknown}; valid: {sorted(known)}")
    for key, value in params.items():
        _check_type(name, key, value, known[key])
    return _lookup(name)(Path(out), samples=samples, seed=seed, progress=progress, **params)


def _check_type(name: str, key: str, value: Any, default: Any) -> None:
    """A parameter takes the type of its default (an integer is a number too)."""
    integer = isinstance(default, int)
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise ValueError(
            f"{name}: parameter '{key}' must be {kind} (default {default}), got {value!r}"
        )


def _lookup(name: str) -> Callable[..., Path]:
    if name not in GENERATORS:
        raise ValueError(f"unknown generator '{name}'; choose one of {sorted(GENERATORS)}")
    return GENERATORS[name]


__all__ = [
    "GENERATORS",
    "WRITES",
    "default_filename",
    "generate",
    "parameters",
    "suffix_warning",
]
