"""Accuracy, balanced accuracy and confusion matrices for the two video tasks.

Balanced accuracy is the mean per-class recall over the classes present in the targets, as
``sklearn.metrics.balanced_accuracy_score`` computes it. With every class present this equals the
official SoccerNet MVFoul evaluator (mean over classes of correct / ground truth), whose leaderboard
value is the mean of the action and offence balanced accuracies. It is derived from the confusion
matrix rather than ``MulticlassAccuracy(average="macro")`` because torchmetrics counts a class that
is predicted but absent from the targets as recall 0, which sklearn and the evaluator do not.
All states are torchmetrics states, so they are summed across processes under DDP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightstack.core.io import atomic_path
from lightstack.video.labels import ACTION_CLASSES, OFFENCE_CLASSES


def balanced_accuracy(confusion: Tensor) -> Tensor:
    """Mean recall over the classes with at least one target (rows: target, columns: prediction).

    NaN when the matrix is empty.
    """
    support = confusion.sum(dim=1)
    present = support > 0
    if not bool(present.any()):
        return torch.tensor(float("nan"))
    recall = confusion.diagonal()[present].double() / support[present].double()
    return recall.mean().float()


class VideoMetrics(nn.Module):
    """Per task: micro accuracy and confusion matrix; balanced accuracy from the latter.

    ``update(preds, batch)`` takes the model output (logits or class indices under ``action`` and
    ``offence``) and the batch with the targets under the same keys.
    """

    def __init__(
        self, num_actions: int = len(ACTION_CLASSES), num_offence: int = len(OFFENCE_CLASSES)
    ):
        super().__init__()
        self.num_classes = {"action": num_actions, "offence": num_offence}
        self.accuracy = nn.ModuleDict(
            {t: MulticlassAccuracy(n, average="micro") for t, n in self.num_classes.items()}
        )
        self.confmat = nn.ModuleDict(
            {t: MulticlassConfusionMatrix(n) for t, n in self.num_classes.items()}
        )

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.num_classes)

    def update(self, preds: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        for task in self.tasks:  # check first so a bad call updates nothing
            if task not in preds or task not in batch:
                raise KeyError(f"VideoMetrics.update needs '{task}' in both preds and batch")
        for task in self.tasks:
            pred, target = preds[task].detach(), batch[task]
            self.accuracy[task].update(pred, target)
            self.confmat[task].update(pred, target)

    def confusion(self, task: str) -> Tensor:
        """Confusion matrix of ``task`` (rows: target, columns: prediction), counts."""
        if task not in self.num_classes:
            raise KeyError(f"unknown task {task!r}; expected one of {self.tasks}")
        return self.confmat[task].compute()

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for task in self.tasks:
            out[f"{task}/acc"] = self.accuracy[task].compute()
            out[f"{task}/bal_acc"] = balanced_accuracy(self.confusion(task)).to(out[f"{task}/acc"])
        out["leaderboard"] = (out["action/bal_acc"] + out["offence/bal_acc"]) / 2
        return out

    def reset(self) -> None:
        for task in self.tasks:
            self.accuracy[task].reset()
            self.confmat[task].reset()


def plot_confusion(matrix: Tensor, class_names: Sequence[str], path: str | Path) -> Path:
    """Write a confusion matrix (rows: target, columns: prediction) as a PNG; rows are also
    annotated with their recall."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    counts = matrix.detach().cpu().to(torch.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(
            f"confusion matrix of shape {tuple(counts.shape)} does not fit {n} class names"
        )
    support = counts.sum(dim=1, keepdim=True).clamp_min(1)
    frac = (counts.double() / support).numpy()
    size = 1.6 + 0.7 * n
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of row")
    for i in range(n):
        for j in range(n):
            colour = "white" if frac[i, j] > 0.5 else "black"
            ax.text(
                j, i, str(int(counts[i, j])), ha="center", va="center", color=colour, fontsize=8
            )
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("target")
    ax.set_title(f"balanced accuracy {float(balanced_accuracy(counts)):.3f}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
