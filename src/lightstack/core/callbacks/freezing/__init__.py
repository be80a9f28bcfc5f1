"""Block-wise freezing and unfreezing of a backbone during training.

Works on any LightningModule exposing ``freezable_blocks() -> list[nn.Module]`` ordered from the
input to the output; everything outside those blocks (heads, aggregators) always trains.
Blocks start frozen (all of them, or the ``frozen_blocks`` nearest the input) and are unfrozen
by a strategy:

- ``progressive``: ``top_k`` blocks from the top at ``start_epoch``, then every ``every_n_epochs``.
- ``adaptive``: ``top_k`` blocks from the top once ``monitor`` has not improved for ``patience``
  checks (validation ends, or train epoch ends for a ``train/`` metric).
- ``gradient_guided``: at the same epochs as ``progressive``, the ``top_k`` frozen blocks with the
  largest gradient norm on a probe batch (the first batch of the previous epoch), using the
  module's ``probe_loss(batch)`` if it has one, else ``training_step(batch, 0)``.

Newly unfrozen parameters join the first optimizer as a new param group with
``lr = current lr of group 0 * unfreeze_lr_factor``; ``LambdaLR``-style schedulers (such as
warmup + cosine) are extended so the new group follows the same schedule. Batch norms inside
frozen blocks stay in eval mode (running statistics untouched) whatever ``train()`` calls happen.
The module's ``configure_optimizers`` must only pass parameters with ``requires_grad`` (it is
called after the initial freeze).

Under DDP, PyTorch's ``DistributedDataParallel`` only reduces gradients of parameters that
required grad when it was built, so the model is re-wrapped after each unfreeze; decisions are
made on rank 0 and broadcast. FSDP and DeepSpeed are not supported.
"""

from lightstack.core.callbacks.freezing.blocks import BlockFreezing
from lightstack.core.callbacks.freezing.config import FreezingConfig, Strategy
from lightstack.core.callbacks.freezing.strategies import (
    AdaptiveFreezing,
    GradientGuidedFreezing,
    ProgressiveFreezing,
    build_freezing_callback,
)

__all__ = [
    "AdaptiveFreezing",
    "BlockFreezing",
    "FreezingConfig",
    "GradientGuidedFreezing",
    "ProgressiveFreezing",
    "Strategy",
    "build_freezing_callback",
]
