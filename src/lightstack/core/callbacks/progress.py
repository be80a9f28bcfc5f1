"""Progress bars that read metrics at their own rate instead of after every training batch.

Two things make a host wait for the device at every step of a Lightning run:

- a value logged with ``prog_bar=True`` in ``training_step``: Lightning converts every
  progress-bar value to a Python number after each batch (``.item()``, whether or not a bar is
  shown), so the host cannot queue the next step while the device works on this one;
- the bars themselves, which fetch those metrics after every batch.

So lightstack logs per-step values without ``prog_bar`` and these bars show the logged metrics
named in ``show`` (from ``trainer.callback_metrics``) next to the usual progress-bar metrics.
A value logged ``on_step`` and ``on_epoch`` is shown under two names, ``train/loss_step`` (the
latest step) and ``train/loss_epoch`` (the mean of the last finished epoch), never one name
whose meaning changes at the epoch end. They advance every batch but
read metrics at most every ``metrics_interval_s`` seconds during training batches (one sync
per read), and always at epoch and validation ends.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

DEFAULT_SHOW = ("train/loss_step", "train/loss_epoch")


class _ThrottledMetrics(ProgressBar):
    """``get_metrics`` cached for ``metrics_interval_s`` seconds during training batches."""

    _in_train_batch: bool = False
    _cached: dict[str, Any] | None = None
    _read_at: float = 0.0

    def __init__(
        self,
        metrics_interval_s: float = 1.0,
        show: Sequence[str] = DEFAULT_SHOW,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.metrics_interval_s = metrics_interval_s
        self.show = tuple(show)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        now = time.monotonic()
        due = now - self._read_at >= self.metrics_interval_s
        if self._cached is not None and self._in_train_batch and not due:
            return self._cached
        metrics = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        for key in self.show:
            if key in logged and key not in metrics:
                metrics[key] = float(logged[key])
        self._cached, self._read_at = metrics, now
        return metrics

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._in_train_batch = True
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._in_train_batch = False


class ThrottledRichProgressBar(_ThrottledMetrics, RichProgressBar):
    """``RichProgressBar`` showing ``show`` and reading metrics every ``metrics_interval_s``."""


class ThrottledTQDMProgressBar(_ThrottledMetrics, TQDMProgressBar):
    """``TQDMProgressBar`` showing ``show`` and reading metrics every ``metrics_interval_s``."""


class ParameterSummary(ModelSummary):
    """The model's top-level modules and parameter counts, logged once when fitting starts.

    Lightning's own summary adds a FLOPs column and total, which it counts only for a module
    with an ``example_input_array``; lightstack's modules have none, so it printed zeros.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich.console import Console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(*(name for name, _ in columns), box=None)
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*map(str, row))
        frozen = total_parameters - trainable_parameters
        console = Console(file=io.StringIO(), width=120)
        console.print(table)
        console.print(
            f"params: {get_human_readable_count(trainable_parameters).strip()} trainable, "
            f"{get_human_readable_count(frozen).strip()} frozen, "
            f"{get_formatted_model_size(model_size)} MB"
        )
        # Lightning's log (stderr), like its own plain summary: stdout stays for results.
        rank_zero_info(console.file.getvalue().rstrip())
