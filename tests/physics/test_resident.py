"""``data.resident``: training windows cut from one device tensor, batch for batch as the files."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lightstack.core.resume import ResumableSampler
from lightstack.physics.data.resident import ResidentWindows, whole_batch
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.train import train


def test_resident_batches_equal_file_batches(tiny_config, burgers_file):
    cfg = tiny_config("data.initial_step=2", files=[burgers_file, burgers_file])
    windows = PDEDataModule(cfg.data, horizon=2).windows("train", 2)
    resident = ResidentWindows(windows, "cpu")
    assert len(resident) == len(windows)

    def batches(dataset, **kwargs):
        sampler = ResumableSampler(len(windows), seed=3)
        return list(DataLoader(dataset, batch_size=5, sampler=sampler, **kwargs))[:4]

    ours_all = batches(resident, collate_fn=whole_batch)
    for ours, theirs in zip(ours_all, batches(windows), strict=True):
        assert ours.keys() == theirs.keys()
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype, key
            assert torch.equal(ours[key], theirs[key]), key
    assert resident[7]["fields"].shape == windows[7]["fields"].shape == (4, 64, 1)


@pytest.mark.slow
def test_resident_training_runs(tiny_config, tmp_path):
    cfg = tiny_config(
        "data.resident=true",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    )
    result = train(cfg, tmp_path / "run", resume="never")
    assert torch.isfinite(torch.tensor(result.metrics["val/nrmse"]))
