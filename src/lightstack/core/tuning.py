"""Batch-size and learning-rate search before training, through Lightning's ``Tuner``.

``--tune-batch-size`` grows the datamodule's ``batch_size`` (``binsearch``: double until out of
memory or the data set's size, then bisect) and ``--tune-lr`` runs the LR range test and takes
its suggestion. The results update the run's resolved ``config.yaml`` (so the run records what
it trained with), ``tuning.json`` holds the search, and ``lr_find.png`` the LR curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lightstack.core.config import RunConfig, apply_updates, loader_section, save_config
from lightstack.core.io import atomic_path, atomic_write_json


def _check_batch_size_attribute(
    module: L.LightningModule, datamodule: L.LightningDataModule
) -> None:
    if hasattr(module, "batch_size"):
        raise TypeError(
            f"{type(module).__name__} has a batch_size attribute; the batch size tuner would "
            "change it instead of the datamodule's"
        )
    if not isinstance(getattr(datamodule, "batch_size", None), int):
        raise TypeError(
            f"--tune-batch-size needs {type(datamodule).__name__}.batch_size (an int attribute "
            "its train_dataloader reads)"
        )


def tune(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: RunConfig,
    run_dir: str | Path,
    batch_size: bool,
    lr: bool,
) -> dict[str, Any]:
    """Run the requested searches; return the config updates (dotted path -> value).

    The updates are also written into ``run_dir/config.yaml``; apply them to the config the
    module trains with (``core.config.apply_updates``). The datamodule's ``batch_size`` is
    already set to the found value. Single device only (Lightning's tuner does not search
    across processes): tune on one GPU, then scale out with the found values.
    """
    if not (batch_size or lr):
        return {}
    if trainer.world_size > 1 or cfg.trainer.num_nodes > 1:
        raise ValueError(
            "batch-size and LR tuning run on one device; tune with trainer.devices=1 "
            "trainer.num_nodes=1, then launch the distributed run with the values found"
        )
    run_dir = Path(run_dir)
    knobs = cfg.training.tune
    tuner = Tuner(trainer)
    updates: dict[str, Any] = {}
    report: dict[str, Any] = {}
    if batch_size:
        _check_batch_size_attribute(module, datamodule)
        start = datamodule.batch_size  # type: ignore[attr-defined]
        found = tuner.scale_batch_size(
            module,
            datamodule=datamodule,
            mode=knobs.batch_size_mode,
            steps_per_trial=knobs.steps_per_trial,
            init_val=start,
            max_trials=knobs.max_trials,
            max_val=knobs.max_batch_size,
        )
        if found is not None:
            updates[f"{loader_section(cfg)}.batch_size"] = int(found)
        report["batch_size"] = {"start": start, "found": found, "mode": knobs.batch_size_mode}
    if lr:
        if cfg.optimizer.name != "adamw":
            raise ValueError(
                f"--tune-lr supports optimizer.name=adamw only: the LR range test sweeps every "
                f"parameter group at one LR, which says nothing about {cfg.optimizer.name}'s "
                "separate learning rates"
            )
        finder = tuner.lr_find(
            module,
            datamodule=datamodule,
            min_lr=knobs.lr_min,
            max_lr=knobs.lr_max,
            num_training=knobs.lr_steps,
            update_attr=False,
        )
        suggestion = finder.suggestion() if finder is not None else None
        if finder is not None:
            import matplotlib.pyplot as plt

            figure = finder.plot(suggest=suggestion is not None)
            with atomic_path(Path(run_dir) / "lr_find.png") as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            plt.close(figure)
            report["lr"] = {
                "suggestion": suggestion,
                "lrs": [float(v) for v in finder.results["lr"]],
                "losses": [float(v) for v in finder.results["loss"]],
            }
        if suggestion is None:
            rank_zero_warn("the LR finder made no suggestion; optimizer.lr is unchanged")
        else:
            updates["optimizer.lr"] = float(suggestion)
    if trainer.is_global_zero:
        save_config(apply_updates(cfg, updates), run_dir / "config.yaml")
        atomic_write_json(run_dir / "tuning.json", {"updates": updates, **report})
    return updates
