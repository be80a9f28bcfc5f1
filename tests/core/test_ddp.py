"""DDP on CPU (gloo): 2 processes x batch B train the physics operator like 1 process x 2B.

The test runs this file as a script (``python test_ddp.py DATA OUT DEVICES BATCH``) in a
subprocess, so Lightning's DDP launcher can start the second rank the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


def _config(data: str, devices: int, batch: int) -> dict[str, Any]:
    return {
        "family": "physics",
        "seed": 0,
        "data": {
            "train_files": [data],
            "reduced_resolution": 4,
            "reduced_resolution_t": 10,
            "max_samples": 8,
            "stats_samples": 8,
            "loader": {"batch_size": batch},
        },
        "model": {"width": 16, "heads": 2, "patch_size": 4, "operator_depth": 1},
        "loss": {"rollout_horizon": 2},
        "optimizer": {"lr": 3e-3, "scheduler": {"name": "none"}},
        "trainer": {
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp" if devices > 1 else "auto",
            "max_epochs": 2,
            "limit_train_batches": 3,
            "log_every_n_steps": 1,
        },
        "training": {"skip_lightning_val": True},
        "checkpoint": {"save_top_k": 0, "save_last": False},
        "logging": {"loggers": [], "progress_bar": "none"},
    }


def main(data: str, out: str, devices: int, batch: int) -> None:
    """Train and write the loss of every step (mean over ranks) and the final weights."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    from lightstack.core.trainer import build_trainer
    from lightstack.physics.config import PhysicsConfig
    from lightstack.physics.data.windows import PDEDataModule
    from lightstack.physics.stages import build_stage
    from lightstack.physics.train import with_data_shapes

    torch.set_num_threads(1)

    class InOrder(PDEDataModule):
        """No shuffling; rank r of 2 gets samples r, r + 2, ... so that each step's two half
        batches together are the single process's batch. (Lightning's own DistributedSampler
        always shuffles training data.)"""

        def train_dataloader(self):
            windows = self.windows("train", self.horizon)
            ranks, rank = self.trainer.world_size, self.trainer.global_rank
            sampler = DistributedSampler(windows, ranks, rank, shuffle=False)
            return DataLoader(windows, batch_size=self.cfg.loader.batch_size, sampler=sampler)

    class LossCurve(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            mean = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
            self.losses.append(float(mean))

    L.seed_everything(0, verbose=False)
    cfg = PhysicsConfig.model_validate(_config(data, devices, batch))
    dm = InOrder(cfg.data, horizon=cfg.loss.rollout_horizon)
    cfg = with_data_shapes(cfg, dm)
    stage = build_stage(cfg, dm)
    curve = LossCurve()
    trainer = build_trainer(cfg, Path(out), "val/nrmse", [curve], module=stage)
    trainer.fit(stage, datamodule=dm)
    if trainer.is_global_zero:
        weights = {k: v.flatten().tolist() for k, v in stage.model.state_dict().items()}
        result = {"world_size": trainer.world_size, "losses": curve.losses, "weights": weights}
        Path(out, "result.json").write_text(json.dumps(result))


def _run(data: Path, out: Path, devices: int, batch: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    command = [sys.executable, __file__, str(data), str(out), str(devices), str(batch)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_two_processes_match_one_process_with_twice_the_batch(burgers_file, tmp_path):
    single = _run(burgers_file, tmp_path / "single", devices=1, batch=8)
    ddp = _run(burgers_file, tmp_path / "ddp", devices=2, batch=4)
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert len(single["losses"]) == len(ddp["losses"]) == 6  # 3 steps x 2 epochs
    assert single["losses"][3] < single["losses"][0]  # same batch, one epoch later: it trains
    assert ddp["losses"] == pytest.approx(single["losses"], rel=1e-4)
    # Attention key biases (the first half of attn.kv.bias) have a zero true gradient: softmax
    # ignores a shift of all logits. Adam normalises their round-off gradients into steps of up
    # to lr, so those only agree to within 6 steps of lr = 3e-3; every other weight, the value
    # biases in the second half included, to round-off.
    for key, value in single["weights"].items():
        if key.endswith("attn.kv.bias"):
            half = len(value) // 2
            key_bias, value_bias = ddp["weights"][key][:half], ddp["weights"][key][half:]
            assert key_bias == pytest.approx(value[:half], abs=6 * 3e-3), key
            assert value_bias == pytest.approx(value[half:], abs=1e-5), key
        else:
            assert ddp["weights"][key] == pytest.approx(value, abs=1e-5), key


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
