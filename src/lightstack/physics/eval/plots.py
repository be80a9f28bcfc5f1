"""Prediction-vs-truth figures (matplotlib, no display needed).

1D trajectories are drawn as x-t heat maps of truth, prediction and absolute error (one row
per trajectory); 2D trajectories as images of the three at a few time slices (one row each).
Channel 0 is shown; further spatial axes are sliced at index 0.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lightstack.core.io import atomic_path
from lightstack.physics.eval.rollout import RolloutSample


def _fields(sample: RolloutSample) -> dict[str, np.ndarray]:
    """Truth, prediction and absolute error of channel 0, ``(T, *S)`` each."""
    truth = sample.truth[..., 0].float().numpy()
    pred = sample.prediction[..., 0].float().numpy()
    return {"truth": truth, "prediction": pred, "|error|": np.abs(pred - truth)}


def _xt_row(axes: np.ndarray, sample: RolloutSample) -> None:
    x = sample.grid[..., 0].numpy()
    fields = _fields(sample)
    steps = fields["truth"].shape[0]
    vmin, vmax = float(fields["truth"].min()), float(fields["truth"].max())
    for ax, (name, values) in zip(axes, fields.items(), strict=True):
        scale = {} if name == "|error|" else {"vmin": vmin, "vmax": vmax}
        image = ax.imshow(
            values.T,
            origin="lower",
            aspect="auto",
            cmap="magma" if name == "|error|" else "RdBu_r",
            extent=(-0.5, steps - 0.5, float(x[0]), float(x[-1])),
            **scale,
        )
        ax.axvline(sample.initial_step - 0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel("time step")
        ax.set_ylabel("x")
        ax.set_title(f"{sample.task}: {name}", fontsize=8)
        ax.figure.colorbar(image, ax=ax, fraction=0.05)


def _slices_rows(axes: np.ndarray, sample: RolloutSample) -> None:
    fields = _fields(sample)
    steps = fields["truth"].shape[0]
    times = sorted({sample.initial_step, (sample.initial_step + steps - 1) // 2, steps - 1})
    for row, (name, values) in zip(axes, fields.items(), strict=True):
        for ax, step in zip(row, times, strict=False):
            image, truth = values[step], fields["truth"][step]
            while image.ndim > 2:
                image, truth = image[..., 0], truth[..., 0]
            scale = {} if name == "|error|" else {"vmin": truth.min(), "vmax": truth.max()}
            shown = ax.imshow(
                image.T, origin="lower", cmap="magma" if name == "|error|" else "RdBu_r", **scale
            )
            ax.set_xlabel("x index")
            ax.set_ylabel("y index")
            ax.set_title(f"{sample.task}: {name}, step {step}", fontsize=8)
            ax.figure.colorbar(shown, ax=ax, fraction=0.05)


def plot_predictions(samples: list[RolloutSample], path: str | Path) -> Path:
    """Truth, prediction and error of each sample (see the module docstring) into ``path``."""
    if not samples:
        raise ValueError("no samples to plot")
    one_d = samples[0].truth.dim() == 3
    rows = len(samples) * (1 if one_d else 3)
    fig, axes = plt.subplots(rows, 3, figsize=(12, 2.8 * rows), squeeze=False, layout="constrained")
    for index, sample in enumerate(samples):
        if one_d:
            _xt_row(axes[index], sample)
        else:
            _slices_rows(axes[3 * index : 3 * index + 3], sample)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=80)
    plt.close(fig)
    return path
