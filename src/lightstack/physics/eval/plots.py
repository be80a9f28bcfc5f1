"""Prediction-vs-truth figures (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from lightstack.core.io import atomic_path
from lightstack.physics.eval.rollout import RolloutSample


def plot_predictions(samples: list[RolloutSample], path: str | Path) -> Path:
    """One row per sample: truth vs rollout at three times (1D lines, 2D images of channel 0)."""
    if not samples:
        raise ValueError("no samples to plot")
    steps = samples[0].prediction.shape[0]
    times = sorted({1, max(1, steps // 2), steps})
    fig, axes = plt.subplots(
        len(samples), len(times), figsize=(4 * len(times), 2.8 * len(samples)), squeeze=False
    )
    for row, sample in zip(axes, samples, strict=True):
        spatial_dims = sample.truth.dim() - 2
        for ax, step in zip(row, times, strict=True):
            truth, pred = sample.truth[step, ..., 0], sample.prediction[step - 1, ..., 0]
            if spatial_dims == 1:
                x = sample.grid[..., 0]
                ax.plot(x, truth, label="truth", color="black")
                ax.plot(x, pred, label="prediction", color="tab:red", linestyle="--")
                ax.legend(fontsize=7)
            else:
                ax.imshow(_side_by_side(truth, pred), cmap="RdBu_r", interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{sample.task}: step {step} (truth | prediction)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=90)
    plt.close(fig)
    return path


def _side_by_side(left: torch.Tensor, right: torch.Tensor) -> np.ndarray:
    """Two fields (axes beyond the first two sliced at 0) placed next to each other."""
    while left.dim() > 2:
        left, right = left[..., 0], right[..., 0]
    return torch.cat([left, right], dim=-1).numpy()
