"""Batching multi-view items whose view counts differ."""

from __future__ import annotations

from typing import Any

import torch


def collate_views(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items whose view counts differ: zero-pad to the batch's most views.

    Returns ``video`` ``(B, V, 3, T, H, W)``, ``view_mask`` ``(B, V)`` bool (True = real view),
    ``view_ids`` ``(B, V)`` long (each view's camera position, 0 where padded; an item without
    ``view_ids`` has its views at positions ``0..n-1``), ``action``/``offence``/``n_views``
    ``(B,)`` long and ``id`` (list of str).
    """
    n_views = [item["video"].shape[0] for item in batch]
    first = batch[0]["video"]
    video = first.new_zeros((len(batch), max(n_views), *first.shape[1:]))
    mask = torch.zeros(len(batch), max(n_views), dtype=torch.bool)
    view_ids = torch.zeros(len(batch), max(n_views), dtype=torch.long)
    for b, item in enumerate(batch):
        video[b, : n_views[b]] = item["video"]
        mask[b, : n_views[b]] = True
        view_ids[b, : n_views[b]] = item.get("view_ids", torch.arange(n_views[b]))
    return {
        "video": video,
        "view_mask": mask,
        "view_ids": view_ids,
        "action": torch.stack([item["action"] for item in batch]),
        "offence": torch.stack([item["offence"] for item in batch]),
        "n_views": torch.tensor(n_views, dtype=torch.long),
        "id": [item["id"] for item in batch],
    }
