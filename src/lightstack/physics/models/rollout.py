"""The autoregressive loop every time-stepping model shares: advance a state, emit a frame.

``LatentSurrogate``, the latent correctors and the FNO baseline all roll out this way and
differ only in what their state is (a latent, or a history of snapshots) and how one step
advances it, so each passes that step here and keeps its own ``rollout`` signature.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from lightstack.physics.models.history import slide_history

if TYPE_CHECKING:
    from lightstack.physics.models.surrogate import LatentSurrogate

Step = Callable[[torch.Tensor], torch.Tensor]


def unroll(
    state: torch.Tensor,
    advance: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
) -> torch.Tensor:
    """Call ``advance(state) -> (next state, frame)`` ``steps`` times; the frames stacked on
    dimension 1: (B, steps, ...)."""
    frames = []
    for _ in range(steps):
        state, frame = advance(state)
        frames.append(frame)
    return torch.stack(frames, dim=1)


def latent_rollout(
    surrogate: LatentSurrogate, u0: torch.Tensor, grid: torch.Tensor, step: Step, steps: int
) -> torch.Tensor:
    """Encode the history ``u0`` (B, *S, K * C), advance its latent with ``step`` ``steps``
    times and decode every state on ``grid``: (B, steps, *S, C). With the surrogate's
    ``predict_increment`` each frame is anchored on the last snapshot (``anchor``)."""
    z = surrogate.encode(u0, grid)
    anchor = None
    if surrogate.cfg.predict_increment:
        anchor = surrogate.anchor(u0, surrogate.decode_grid(z, grid))

    def advance(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = step(z)
        frame = surrogate.decode_grid(z, grid)
        return z, frame if anchor is None else frame + anchor

    return unroll(z, advance, steps)


def history_rollout(history: torch.Tensor, step: Step, steps: int) -> torch.Tensor:
    """Predict the next snapshot from ``history`` (B, *S, K * C) with ``step`` ``steps`` times,
    each prediction replacing the oldest snapshot of the history as in PDEBench's FNO:
    (B, steps, *S, C)."""

    def advance(history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame = step(history)
        return slide_history(history, frame), frame

    return unroll(history, advance, steps)
