import json

import lightning as L
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from lightstack.physics.data.mixing import window_weights
from lightstack.physics.data.windows import PDEDataModule

torch.set_num_threads(1)


def two_task_datamodule(tiny_config, burgers_file, *overrides):
    """The same file twice under two task names: 8 and 4 samples' worth of windows."""
    cfg = tiny_config(
        "data.task_names=[big, small]",
        "data.max_samples=10",
        *overrides,
        files=[burgers_file, burgers_file],
    )
    return PDEDataModule(cfg.data, horizon=2)


def task_shares(dm, sampler, draws):
    dataset = dm.windows("train", 2)
    bounds = dataset.cumulative_sizes
    counts = torch.zeros(2)
    for index in list(sampler)[:draws]:
        counts[0 if index < bounds[0] else 1] += 1
    return counts / counts.sum()


def test_weights_set_each_tasks_share_of_draws(tiny_config, burgers_file):
    dm = two_task_datamodule(tiny_config, burgers_file, "data.task_weights={big: 1, small: 3}")
    L.seed_everything(0)
    loader = dm.train_dataloader()
    assert loader.sampler.weights is not None
    assert len(list(loader.sampler)) == len(loader.dataset)
    shares = task_shares(dm, loader.sampler, draws=len(loader.dataset))
    assert shares[1] == pytest.approx(0.75, abs=0.06)
    batch = next(iter(loader))
    assert batch["fields"].shape[1] == 3 and set(batch["task"].tolist()) <= {0, 1}


def test_without_weights_the_loader_shuffles(tiny_config, burgers_file):
    dm = two_task_datamodule(tiny_config, burgers_file)
    L.seed_everything(0)
    sampler = dm.train_dataloader().sampler
    assert sampler.shuffle and sampler.weights is None
    order = list(sampler)
    assert sorted(order) == list(range(len(order))) and order != sorted(order)


def test_zero_weight_excludes_a_task(tiny_config, burgers_file):
    dm = two_task_datamodule(tiny_config, burgers_file)
    weights = window_weights(dm.windows("train", 2), dm.task_names, {"big": 1, "small": 0})
    sampler = WeightedRandomSampler(weights, num_samples=200)
    assert task_shares(dm, sampler, draws=200)[1] == 0


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"big": 1}, r"missing \['small'\]"),
        ({"big": 1, "small": 1, "typo": 1}, r"unknown \['typo'\]"),
        ({"big": 0, "small": 0}, "all zero"),
    ],
)
def test_bad_weights_are_named(tiny_config, burgers_file, weights, message):
    dm = two_task_datamodule(tiny_config, burgers_file, f"data.task_weights={json.dumps(weights)}")
    with pytest.raises(ValueError, match=message):
        dm.train_dataloader()


def test_negative_weight_is_a_config_error(tiny_config):
    from lightstack.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"data\.task_weights\.burgers"):
        tiny_config("data.task_weights={burgers: -1}")


def test_mixed_training_logs_each_tasks_nrmse(tiny_config, burgers_file, tmp_path):
    from lightstack.physics.train import train

    cfg = tiny_config(
        "data.task_names=[big, small]",
        "data.max_samples=6",
        "data.task_weights={big: 1, small: 1}",
        files=[burgers_file, burgers_file],
    )
    metrics = train(cfg, tmp_path / "run").metrics
    for key in ("train/big/nrmse", "train/small/nrmse", "val/big/nrmse", "val/small/nrmse"):
        assert metrics[key] > 0, key
