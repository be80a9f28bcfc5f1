"""Multi-task mixing: draw training windows of several PDE files by configurable task weights.

Each window of task ``i`` gets the sampling weight ``w_i / n_i`` (``n_i`` windows of that
task), so a task's share of the draws is ``w_i / sum(w)`` whatever its size. Draws are with
replacement and an epoch keeps the size of the data set; the training loader's
``ResumableSampler`` draws them (and splits the draws between processes under DDP).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import ConcatDataset


def window_weights(
    dataset: ConcatDataset, task_names: list[str], weights: Mapping[str, float]
) -> torch.Tensor:
    """Sampling weight of every window of ``dataset`` (parts carry ``task_id``)."""
    unknown = sorted(set(weights) - set(task_names))
    missing = [t for t in task_names if t not in weights]
    if unknown or missing:
        raise ValueError(
            f"data.task_weights must name every task exactly: tasks are {task_names}"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    if not any(weights[t] > 0 for t in task_names):
        raise ValueError(f"data.task_weights {dict(weights)} are all zero")
    per_window = []
    for part in dataset.datasets:
        weight = weights[task_names[part.task_id]] / max(1, len(part))
        per_window.append(torch.full((len(part),), weight, dtype=torch.double))
    return torch.cat(per_window)
