"""``data.split: pdebench`` holds out exactly the samples PDEBench's loaders hold out.

PDEBench (pdebench/models/fno/utils.py): ``FNODatasetSingle`` caps the samples at
``num_samples_max``, then ``test_idx = int(num_samples_max * test_ratio)``; the test set is
``data[:test_idx]`` and the training set ``data[test_idx:num_samples_max]``. ``FNODatasetMult``
sorts the seed groups and tests on ``keys[int(len(keys) * (1 - test_ratio)):]``.
"""

from __future__ import annotations

import numpy as np
import pytest

from lightstack.physics.data.generate import generate
from lightstack.physics.data.windows import PDEDataModule, pdebench_split


def test_single_array_files_test_on_the_first_samples() -> None:
    split = pdebench_split(64, 0.1, seed_groups=False)
    np.testing.assert_array_equal(split.test, np.arange(6))  # int(6.4) = 6
    np.testing.assert_array_equal(split.train, np.arange(6, 64))
    np.testing.assert_array_equal(split.val, split.test)


def test_seed_group_files_test_on_the_last_samples() -> None:
    split = pdebench_split(15, 0.1, seed_groups=True)
    np.testing.assert_array_equal(split.train, np.arange(13))  # int(13.5) = 13
    np.testing.assert_array_equal(split.test, [13, 14])


def test_too_few_samples_for_a_test_set() -> None:
    with pytest.raises(ValueError, match=r"leaves 5 training and 0 test samples of 5"):
        pdebench_split(5, 0.1, seed_groups=False)


def test_data_module_serves_pdebench_split(tiny_config, burgers_file, tmp_path) -> None:
    cfg = tiny_config("data.split=pdebench", "data.max_samples=50")
    dm = PDEDataModule(cfg.data, horizon=1)
    (split,) = dm.splits
    np.testing.assert_array_equal(split.test, np.arange(5))  # num_samples_max 50 -> int(5.0)
    np.testing.assert_array_equal(split.train, np.arange(5, 50))
    assert [len(d.samples) for d in dm._windows("val", None)] == [5]

    groups = generate("ns2d", tmp_path / "ns2d.h5", 10, seed=0, nx=8, t_end=1.0, dt_save=0.5)
    cfg = tiny_config("data.split=pdebench", "data.reduced_resolution=1", files=[groups])
    (split,) = PDEDataModule(cfg.data, horizon=1).splits
    np.testing.assert_array_equal(split.test, [9])  # keys[int(10 * 0.9):]
    np.testing.assert_array_equal(split.train, np.arange(9))
