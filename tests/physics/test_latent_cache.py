import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lightstack.physics.config import LatentCacheConfig
from lightstack.physics.data import latent_cache
from lightstack.physics.data.latent_cache import (
    LatentWindows,
    cache_key,
    encoder_fingerprint,
    open_or_build,
)
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.models.surrogate import LatentSurrogate
from lightstack.physics.train import with_data_shapes

torch.set_num_threads(1)


def setup(tiny_config, *overrides, files=None):
    cfg = tiny_config("data.max_samples=8", *overrides, files=files)
    dm = PDEDataModule(cfg.data, horizon=cfg.loss.rollout_horizon)
    cfg = with_data_shapes(cfg, dm)
    torch.manual_seed(0)
    model = LatentSurrogate(cfg.model).eval()
    model.set_normalization(*dm.field_stats())
    return model, dm


def test_cached_latents_are_the_encoder_outputs(tiny_config, tmp_path):
    model, dm = setup(tiny_config)
    cache = open_or_build(model, dm, LatentCacheConfig(root=str(tmp_path)))
    assert cache.built and (cache.path / "meta.json").is_file()
    train = cache.windows("train", horizon=2)
    trajectories = dm.windows("train", None)
    n_times = trajectories[0]["fields"].shape[0]
    assert len(train) == len(trajectories) * (n_times - 2)
    item = train[1]  # trajectory 0, window starting at step 1
    fields, grid = trajectories[0]["fields"], trajectories[0]["grid"]
    with torch.no_grad():
        expected = model.encode(fields[1:4], grid.expand(3, *grid.shape))
    assert item["latents"].shape == (3, 64 // 4, 32)
    torch.testing.assert_close(item["latents"], expected, rtol=1e-5, atol=1e-6)
    assert item["task"] == 0 and item["dt"] > 0 and item["params"].shape == (0,)
    whole = cache.windows("val", horizon=None)
    assert len(whole) == len(dm.windows("val", None))
    assert whole[0]["latents"].shape[0] == n_times
    with pytest.raises(ValueError, match="not 'test'"):
        cache.windows("test", 2)


def test_latent_windows_need_no_encoder_and_load_in_batches(tiny_config, tmp_path):
    model, dm = setup(tiny_config)
    cache = open_or_build(model, dm, LatentCacheConfig(root=str(tmp_path), dtype="float16"))
    del model  # training from the cache needs no encoder
    batch = next(iter(DataLoader(cache.windows("train", 2), batch_size=4, num_workers=0)))
    assert batch["latents"].shape == (4, 3, 16, 32) and batch["latents"].dtype == torch.float32
    part = cache.windows("train", 2).datasets[0]
    assert isinstance(part, LatentWindows)
    assert part.__getstate__()["_array"] is None  # workers reopen the memory map


def test_changes_that_affect_latents_rebuild_and_others_reuse(tiny_config, tmp_path, burgers_file):
    data_file = tmp_path / "burgers.h5"
    shutil.copy(burgers_file, data_file)
    cfg = LatentCacheConfig(root=str(tmp_path / "cache"))
    model, dm = setup(tiny_config, files=[data_file])
    first = open_or_build(model, dm, cfg)
    stamp = (first.path / "meta.json").stat().st_mtime_ns

    # unrelated fields (batch size, epochs, cache batch size) reuse the entry
    _, dm_same = setup(
        tiny_config, "data.loader.batch_size=3", "trainer.max_epochs=5", files=[data_file]
    )
    again = open_or_build(model, dm_same, cfg.model_copy(update={"batch_size": 2}))
    assert not again.built and again.path == first.path
    assert (again.path / "meta.json").stat().st_mtime_ns == stamp

    # data reduction, split and encoder weights change the key
    _, dm_t = setup(tiny_config, "data.reduced_resolution_t=20", files=[data_file])
    _, dm_split = setup(tiny_config, "data.split_seed=1", files=[data_file])
    changed = [open_or_build(model, dm_t, cfg), open_or_build(model, dm_split, cfg)]
    other_model, _ = setup(tiny_config, files=[data_file])
    with torch.no_grad():
        next(other_model.encoder.parameters()).add_(0.01)
    assert encoder_fingerprint(other_model) != encoder_fingerprint(model)
    changed.append(open_or_build(other_model, dm, cfg))
    # a rewritten data file (new modification time) changes it too
    mtime = data_file.stat().st_mtime_ns + 10**9
    os.utime(data_file, ns=(mtime, mtime))
    changed.append(open_or_build(model, dm, cfg))
    assert all(c.built for c in changed)
    assert len({first.path, *(c.path for c in changed)}) == 5


def test_half_written_cache_is_never_used(tiny_config, tmp_path, monkeypatch):
    model, dm = setup(tiny_config)
    cfg = LatentCacheConfig(root=str(tmp_path))
    real = latent_cache._encode_split
    calls = []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill in the middle of the build
        return real(*args, **kwargs)

    monkeypatch.setattr(latent_cache, "_encode_split", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        open_or_build(model, dm, cfg)
    assert list(tmp_path.iterdir()) == []  # the partial build was removed
    monkeypatch.setattr(latent_cache, "_encode_split", real)
    # a process killed outright leaves its temporary folder: never mistaken for the entry
    key, _ = cache_key(dm.cfg, model, ["train", "val"], cfg.dtype)
    (tmp_path / f".{key}.dead.tmp").mkdir()
    (tmp_path / f".{key}.dead.tmp" / "train-0.npy").write_bytes(b"partial")
    cache = open_or_build(model, dm, cfg)
    assert cache.built and cache.path == tmp_path / key

    # an entry whose array was truncated afterwards is detected and rebuilt
    array_file = cache.path / "train-0.npy"
    array_file.write_bytes(array_file.read_bytes()[:200])
    rebuilt = open_or_build(model, dm, cfg)
    assert rebuilt.built and rebuilt.path == cache.path
    assert np.load(array_file).shape == tuple(rebuilt.meta["arrays"][0]["shape"])
