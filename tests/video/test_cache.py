"""The decoded-clip cache (``video prepare``): read like the raw tree, resumable, verified."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lightstack.video.data.cache import MARKER, prepare_cache
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import ClipError
from lightstack.video.data.mvfoul import MVFoulDataModule, VideoDataConfig
from lightstack.video.inference import predict_dataset
from lightstack.video.labels import load_annotations
from lightstack.video.models.multiview import MultiViewModel, VideoModelConfig

SPAN = {"start": 0, "end": 8}  # the synthetic clips' 8 frames
SIZE = (32, 32)
SPLITS = ("train", "valid", "test")


def prepare(root: Path, out: Path, **kwargs) -> dict:
    return prepare_cache(root, out, size=SIZE, workers=0, **SPAN, **kwargs)


@pytest.fixture(scope="module")
def cached(mvfoul_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    prepare(mvfoul_tree[0], out)
    return out


def scored_clips(split_dir: Path) -> list[Path]:
    return [c for r in load_annotations(split_dir / "annotations.json") for c in r.clips]


def items(dataset: MVFoulDataset) -> list[dict]:
    return [dataset[k] for k in range(len(dataset))]


def assert_same_items(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["id"] == y["id"] and x["view_ids"].tolist() == y["view_ids"].tolist()
        assert torch.equal(x["video"], y["video"]), x["id"]  # bit for bit


def test_cache_mirrors_the_tree(mvfoul_tree, cached):
    root = mvfoul_tree[0]
    summary = json.loads((cached / "prepare.json").read_text())
    for split in SPLITS:
        raw, cache = root / split, cached / split
        assert (cache / "annotations.json").read_bytes() == (raw / "annotations.json").read_bytes()
        marker = json.loads((cache / MARKER).read_text())
        assert marker["indices"] == list(range(8)) and marker["size"] == list(SIZE)
        clips = scored_clips(raw)
        assert summary["splits"][split]["decoded"] == len(clips)
        frames = np.load(cache / clips[0].relative_to(raw).with_suffix(".npy"), mmap_mode="r")
        assert frames.shape == (8, *SIZE, 3) and frames.dtype == np.uint8
        record = json.loads((cache / clips[0].relative_to(raw).with_suffix(".json")).read_text())
        assert record["source_bytes"] == clips[0].stat().st_size
    again = prepare(root, cached)  # everything valid: nothing decoded again
    assert all(s["decoded"] == 0 and s["reused"] > 0 for s in again["splits"].values())


@pytest.mark.parametrize(
    ("split", "window"),
    [
        ("train", {"frames": 8, "fps": 25.0, "views_per_sample": 2, "seed": 3}),
        ("valid", {"frames": 4, "fps": 12.5}),  # every other frame of the cached span
        ("test", {"frames": 3, "fps": 25.0, "max_views": 2}),
    ],
)
def test_cache_gives_the_same_items_as_the_raw_tree(mvfoul_tree, cached, split, window):
    kwargs = {**SPAN, "size": SIZE, **window}
    raw = MVFoulDataset(mvfoul_tree[0] / split, **kwargs)
    cache = MVFoulDataset(cached / split, **kwargs)
    assert_same_items(items(raw), items(cache))


def test_cache_gives_the_same_batches_and_predictions(mvfoul_tree, cached):
    def batches(root: Path) -> list[dict]:
        cfg = VideoDataConfig(root=root, frames=8, fps=25, size=SIZE, batch_size=4, **SPAN)
        L.seed_everything(0, verbose=False)
        dm = MVFoulDataModule(cfg)
        dm.setup("fit")
        return list(dm.train_dataloader())

    for raw, cache in zip(batches(mvfoul_tree[0]), batches(cached), strict=True):
        assert raw["id"] == cache["id"] and torch.equal(raw["video"], cache["video"])
        assert torch.equal(raw["view_ids"], cache["view_ids"])

    torch.manual_seed(0)
    model_cfg = VideoModelConfig(aggregation="transformer", hidden=16, heads=2)
    model = MultiViewModel(model_cfg).eval()
    preds = [
        predict_dataset(
            model,
            MVFoulDataset(r / "test", frames=8, fps=25, size=SIZE, **SPAN),
            torch.device("cpu"),
            4,
        )
        for r in (mvfoul_tree[0], cached)
    ]
    assert preds[0] == preds[1] and len(preds[0]) == len(
        load_annotations(cached / "test" / "annotations.json")
    )


def test_prepare_resumes_and_rereads_changed_sources(tree_copy, tmp_path):
    out = tmp_path / "cache"
    prepare(tree_copy, out)
    clips = scored_clips(tree_copy / "valid")
    killed, changed = clips[0], clips[1]
    # killed after the .npy was renamed into place, before its record: the entry is not valid
    (out / "valid" / killed.relative_to(tree_copy / "valid").with_suffix(".json")).unlink()
    stamp = changed.stat()
    os.utime(changed, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    kwargs = {**SPAN, "frames": 8, "fps": 25.0, "size": SIZE}
    with pytest.warns(UserWarning) as caught:
        cache = MVFoulDataset(out / "valid", **kwargs)
    messages = " ".join(str(w.message) for w in caught)
    assert "from its source" in messages and "not in the cache" in messages
    cached_changed = out / "valid" / changed.relative_to(tree_copy / "valid")
    expected = f"reading clip {cached_changed} from its source {changed}: its source changed"
    assert expected in messages
    assert_same_items(items(MVFoulDataset(tree_copy / "valid", **kwargs)), items(cache))

    again = prepare(tree_copy, out)
    assert again["splits"]["valid"]["decoded"] == 2
    assert again["splits"]["valid"]["reused"] == len(clips) - 2
    assert sum(s["decoded"] for s in again["splits"].values()) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every entry valid again: no warning
        fresh = MVFoulDataset(out / "valid", **kwargs)
    # the cache alone (its tree moved away) still reads
    shutil.move(tree_copy, tmp_path / "moved")
    assert_same_items(items(fresh), items(MVFoulDataset(out / "valid", **kwargs)))


def test_undecodable_clip_is_named_and_left_out(tree_copy, tmp_path):
    bad = scored_clips(tree_copy / "train")[1]
    bad.write_bytes(b"\x00garbage, not an mp4\xff" * 64)
    out = tmp_path / "cache"
    with pytest.raises(ClipError, match=rf"1 clips cannot be decoded .*{bad}: cannot decode"):
        prepare(tree_copy, out)
    summary = json.loads((out / "prepare.json").read_text())
    assert list(summary["splits"]["train"]["failed"]) == [str(bad)]
    assert summary["splits"]["train"]["decoded"] == len(scored_clips(tree_copy / "train")) - 1
    kwargs = {**SPAN, "frames": 8, "fps": 25.0, "size": SIZE}
    with pytest.warns(UserWarning, match="not in the cache, and source .* cannot decode"):
        cache = MVFoulDataset(out / "train", **kwargs)
    with pytest.warns(UserWarning, match="cannot decode"):
        raw = MVFoulDataset(tree_copy / "train", **kwargs)
    assert cache.skipped_clips == raw.skipped_clips == 1


def test_window_or_size_outside_the_cache_is_refused(cached):
    with pytest.raises(ClipError, match=r"holds frames 0\.\.7 \(8 frames\) at 32x32.*at 16x16"):
        MVFoulDataset(cached / "train", frames=8, fps=25, size=(16, 16), **SPAN)
    with pytest.raises(ClipError, match=r"reads frames \[0, .*, 9\]"):
        MVFoulDataset(cached / "train", frames=10, start=0, end=10, fps=25, size=SIZE)
    with pytest.raises(ClipError, match="outside the MVFoul root"):
        prepare(cached, cached)
