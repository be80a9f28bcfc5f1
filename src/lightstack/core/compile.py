"""``torch.compile`` of a model, with the torch versions where compiled DDP is known to break.

``maybe_compile`` is called from a LightningModule's ``configure_model`` hook: the trainer knows
the world size there, and the model is not yet wrapped by DDP/FSDP.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from torch import nn

# torch versions on which a compiled model fails under DDP (more than one process), with why.
# Keep this the only list: ``maybe_compile`` and the docs read it.
BROKEN_DISTRIBUTED_COMPILE: dict[str, str] = {
    "<2.2": (
        "Dynamo's DDPOptimizer splits the compiled graph at DDP bucket boundaries and fails "
        "there: NotImplementedError under autocast (pytorch/pytorch#111794, fixed in 2.2 by "
        "pytorch/pytorch#112231) and AttributeError on modules held as graph attributes "
        "(pytorch/pytorch#111279)"
    ),
}


def distributed_compile_problem(version: str | None = None) -> str | None:
    """Why compiled DDP breaks on torch ``version`` (default: the installed one), or None."""
    release = Version(Version(version or torch.__version__).base_version)
    for spec, reason in BROKEN_DISTRIBUTED_COMPILE.items():
        if release in SpecifierSet(spec):
            return f"torch {release} ({spec}): {reason}"
    return None


def _is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def maybe_compile(
    module: nn.Module,
    enabled: bool,
    mode: str = "default",
    world_size: int = 1,
    force: bool = False,
    regions: set[type[nn.Module]] | None = None,
) -> bool:
    """Compile ``module`` in place (``nn.Module.compile``) and return whether it is compiled.

    ``regions``: compile every submodule of these types instead of ``module`` itself (regional
    compilation: each repeated block is compiled once and reused, and methods other than
    ``forward`` that call the blocks run compiled code too). With ``world_size > 1`` on a torch
    version listed in ``BROKEN_DISTRIBUTED_COMPILE`` the model stays eager with a warning,
    unless ``force`` (``training.force_compile_distributed``). Calling it again is harmless.
    """
    if not enabled:
        return False
    problem = distributed_compile_problem() if world_size > 1 else None
    if problem and not force:
        rank_zero_warn(
            f"model.compile is disabled for this {world_size}-process run: {problem}. "
            "Set training.force_compile_distributed=true to compile anyway."
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
