"""Input histories: the last ``initial_step`` snapshots of a field, stacked on channels.

The layout is PDEBench's FNO input (``xx.reshape(*spatial, initial_step * channels)``): time
major, oldest snapshot first, so channel ``k * C + c`` holds channel ``c`` of the ``k``-th
snapshot. With one snapshot the stacked history is the snapshot itself.
"""

from __future__ import annotations

import torch


def history_windows(fields: torch.Tensor, initial_step: int) -> torch.Tensor:
    """Every run of ``initial_step`` consecutive snapshots of ``fields`` (B, T, *S, C), stacked
    on channels: (B, T - initial_step + 1, *S, initial_step * C); window ``i`` ends at ``i +
    initial_step - 1``."""
    count = fields.shape[1] - initial_step + 1
    if count < 1:
        raise ValueError(
            f"{fields.shape[1]} snapshots cannot fill a history of initial_step={initial_step}"
        )
    return torch.cat([fields[:, k : k + count] for k in range(initial_step)], dim=-1)


def stack_history(snapshots: torch.Tensor) -> torch.Tensor:
    """The history (B, *S, K * C) of ``snapshots`` (B, K, *S, C), oldest first."""
    return history_windows(snapshots, snapshots.shape[1])[:, 0]


def teacher_forced(fields: torch.Tensor, initial_step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-step inputs and targets of whole trajectories ``fields`` (B, T, *S, C): the history
    before each predicted step (B, T - K, *S, K * C) and the step itself (B, T - K, *S, C)."""
    return history_windows(fields[:, :-1], initial_step), fields[:, initial_step:]


def slide_history(history: torch.Tensor, snapshot: torch.Tensor) -> torch.Tensor:
    """``history`` (B, *S, K * C) moved on by one step: its oldest snapshot dropped,
    ``snapshot`` (B, *S, C) appended as the newest."""
    return torch.cat([history[..., snapshot.shape[-1] :], snapshot], dim=-1)
