"""``torch.compile`` for every family through one function, and the setups where it cannot work.

``maybe_compile`` is called from a LightningModule's ``configure_model`` hook (the physics
stages do it in ``PhysicsStage.configure_model``): there the trainer knows the device and the
world size, and DDP/FSDP have not wrapped the model yet. ``COMPILE_GUARDS`` lists the setups in
which compilation fails at the first step with an error from deep inside the compiler; there
the model stays eager with a warning that says why, unless ``force``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from packaging.version import Version
from torch import nn

CompileMode = str  # "default", "reduce-overhead" (CUDA graphs), "max-autotune"
CXX_COMPILERS = ("c++", "g++", "clang++", "cl")


@dataclass(frozen=True)
class CompileGuard:
    """A setup where ``torch.compile`` cannot work: ``fires(device)`` says whether it applies."""

    reason: str
    fires: Callable[[torch.device], bool]


def _torch_release() -> Version:
    return Version(Version(torch.__version__).base_version)


def _no_cxx_compiler(device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    named = os.environ.get("CXX")
    return not any(shutil.which(c) for c in ((named,) if named else CXX_COMPILERS))


def _no_triton(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("triton") is None


def _python_too_new(device: torch.device) -> bool:
    return sys.version_info >= (3, 13) and _torch_release() < Version("2.6")


# Keep this the only list: ``maybe_compile`` and docs/infrastructure.md read it.
COMPILE_GUARDS: dict[str, CompileGuard] = {
    "no_cxx_compiler": CompileGuard(
        "Inductor's CPU backend builds C++ kernels and no C++ compiler was found "
        f"({' / '.join(CXX_COMPILERS)} on PATH, or $CXX)",
        _no_cxx_compiler,
    ),
    "no_triton": CompileGuard(
        "Inductor's CUDA backend generates Triton kernels and the triton package is not installed",
        _no_triton,
    ),
    "python_too_new": CompileGuard(
        "torch.compile supports Python 3.13 from torch 2.6 on", _python_too_new
    ),
}


def compile_problem(device: torch.device | str = "cpu") -> str | None:
    """Why ``torch.compile`` cannot work on ``device`` in this environment, or None."""
    device = torch.device(device)
    reasons = [guard.reason for guard in COMPILE_GUARDS.values() if guard.fires(device)]
    return "; ".join(reasons) or None


def _is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def maybe_compile(
    module: nn.Module,
    enabled: bool,
    mode: CompileMode = "default",
    device: torch.device | str = "cpu",
    force: bool = False,
    regions: set[type[nn.Module]] | None = None,
) -> bool:
    """Compile ``module`` in place (``nn.Module.compile``) and return whether it is compiled.

    ``regions``: compile every submodule of these types instead of ``module`` itself (regional
    compilation: each repeated block is compiled once and reused, and methods other than
    ``forward`` that call the blocks run compiled code too). ``mode="reduce-overhead"`` adds
    CUDA graphs, which pay where shapes stay the same from step to step. Where a guard of
    ``COMPILE_GUARDS`` fires for ``device`` the module stays eager with a warning, unless
    ``force``. Calling it again is harmless.
    """
    if not enabled:
        return False
    problem = compile_problem(device)
    if problem and not force:
        rank_zero_warn(
            f"model.compile is off for this run on {torch.device(device)}: {problem}. "
            "Set training.force_compile=true to compile anyway."
        )
        return False
    targets = (
        [m for m in module.modules() if isinstance(m, tuple(regions))] if regions else [module]
    )
    if not targets:
        raise ValueError(
            f"model.compile: {type(module).__name__} has no submodule of type "
            f"{sorted(t.__name__ for t in regions or ())} to compile"
        )
    for target in targets:
        if not _is_compiled(target):
            target.compile(mode=mode)
    return True
