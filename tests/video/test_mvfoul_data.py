from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from lightstack.core.resume import ResumableSampler
from lightstack.video.data.collate import collate_views
from lightstack.video.data.dataset import MVFoulDataset
from lightstack.video.data.decode import ClipError, vars_frame_indices, window_indices
from lightstack.video.data.mvfoul import MVFoulDataModule, VideoDataConfig
from lightstack.video.labels import load_annotations


def window(summary) -> dict:
    return {"frames": summary["frames"], **summary["window"]}


def dataset(split_dir: Path, summary, **kwargs) -> MVFoulDataset:
    kwargs.setdefault("size", tuple(summary["size"]))
    return MVFoulDataset(split_dir, **window(summary), **kwargs)


def corrupt(path: Path) -> None:
    path.write_bytes(b"\x00garbage, not an mp4\xff" * 64)


def test_vars_window_defaults():
    # VARS reads start=63, end=87 at 17 fps: 16 frames around the foul at frame 75
    expected = [63, 65, 66, 68, 69, 71, 72, 74, 75, 77, 78, 80, 81, 83, 84, 86]
    assert vars_frame_indices(63, 87, 17) == expected
    assert window_indices(16, 63, 87, 17) == expected
    assert vars_frame_indices(0, 8, 25) == list(range(8))
    assert window_indices(4, 0, 8, 25) == [0, 2, 5, 7]


def test_train_item_has_two_random_views(mvfoul_tree):
    root, summary = mvfoul_tree
    ds = dataset(root / "train", summary, size=(16, 24), views_per_sample=2)
    loaded = load_annotations(root / "train" / "annotations.json")
    assert len(ds) == len(loaded) and ds.skipped_clips == 0
    item = ds[0]
    assert item["video"].shape == (2, 3, summary["frames"], 16, 24)
    assert item["video"].dtype == torch.float32
    assert item["video"].min() >= 0.0 and item["video"].max() <= 1.0
    assert item["n_views"] == 2
    assert not torch.equal(item["video"][0], item["video"][1])  # two different cameras
    assert item["id"] == loaded[0].id
    assert item["action"].dtype == torch.long
    assert (item["action"].item(), item["offence"].item()) == (loaded[0].action, loaded[0].offence)


def test_eval_items_have_all_views_and_a_seed_fixes_the_draw(mvfoul_tree):
    root, summary = mvfoul_tree
    ds = dataset(root / "test", summary)
    loaded = load_annotations(root / "test" / "annotations.json")
    for k, record in enumerate(loaded):
        assert ds[k]["video"].shape[0] == len(record.clips) == ds[k]["n_views"]
    capped = dataset(root / "test", summary, max_views=2)
    assert max(capped[k]["n_views"] for k in range(len(capped))) == 2
    a = dataset(root / "train", summary, views_per_sample=1, seed=5)
    b = dataset(root / "train", summary, views_per_sample=1, seed=5)
    draws = [a[k]["video"] for k in range(8)]
    assert all(torch.equal(draws[k], b[k]["video"]) for k in range(8))
    assert all(torch.equal(draws[k], a[k]["video"]) for k in range(8))  # same every epoch
    first = dataset(root / "train", summary, max_views=1)  # always view 0
    assert any(not torch.equal(draws[k], first[k]["video"]) for k in range(8))


def test_frames_follow_the_window(mvfoul_tree):
    root, summary = mvfoul_tree
    full = dataset(root / "valid", summary)[0]["video"]
    n = summary["frames"]
    # a window past the clip's end repeats the last frame
    late = MVFoulDataset(root / "valid", 3, start=n - 1, end=n + 2, fps=25, size=(32, 32))[0]
    late = late["video"]
    for t in range(3):
        torch.testing.assert_close(late[:, :, t], full[:, :, n - 1])
    sub = MVFoulDataset(root / "valid", 2, start=2, end=4, fps=25, size=(32, 32))[0]["video"]
    torch.testing.assert_close(sub, full[:, :, 2:4])


def test_collate_pads_views_and_masks_them(mvfoul_tree):
    root, summary = mvfoul_tree
    ds = dataset(root / "train", summary)
    items = [ds[k] for k in range(len(ds))]
    counts = sorted({item["n_views"] for item in items})
    assert counts == [2, 3]
    batch = collate_views([next(i for i in items if i["n_views"] == 2), items[0], *items[1:3]])
    n_views = batch["n_views"].tolist()
    assert batch["video"].shape[:2] == (4, 3)
    assert batch["view_mask"].tolist() == [[v > k for k in range(3)] for v in n_views]
    assert batch["video"][0, 2].abs().sum() == 0
    assert batch["action"].shape == batch["offence"].shape == (4,)
    assert len(batch["id"]) == 4


def test_corrupt_clip_is_skipped_with_a_warning_and_counted(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    loaded = load_annotations(tree_copy / "train" / "annotations.json")
    bad = loaded[0].clips[1]
    corrupt(bad)
    with pytest.warns(UserWarning, match=f"skipping clip {bad}"):
        ds = dataset(tree_copy / "train", summary)
    assert ds.skipped_clips == 1 and ds.skipped_clip_paths == [bad]
    assert len(ds) == len(loaded)
    assert ds[0]["n_views"] == len(loaded[0].clips) - 1


def test_clip_broken_after_the_check_falls_back_to_another_view(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    ds = dataset(tree_copy / "valid", summary)
    n_views = ds[0]["n_views"]
    bad = load_annotations(tree_copy / "valid" / "annotations.json")[0].clips[0]
    corrupt(bad)
    with pytest.warns(UserWarning, match=f"skipping view: {bad}"):
        assert ds[0]["n_views"] == n_views - 1


def test_views_keep_their_camera_position_when_a_clip_is_missing(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    records = load_annotations(tree_copy / "test" / "annotations.json")
    victim = next(k for k, r in enumerate(records) if len(r.clips) == 3)
    records[victim].clips[0].unlink()
    with pytest.warns(UserWarning, match="file not found"):
        labelled = dataset(tree_copy / "test", summary, max_skip_fraction=0.5)
    assert labelled[victim]["view_ids"].tolist() == [1, 2]
    assert labelled[victim]["n_views"] == 2
    other = next(k for k in range(len(labelled)) if k != victim)
    assert labelled[other]["view_ids"].tolist() == list(range(len(records[other].clips)))
    batch = collate_views([labelled[victim], labelled[other]])
    assert batch["view_ids"][0, :2].tolist() == [1, 2]
    (tree_copy / "test" / "annotations.json").unlink()  # unlabelled: from the file names
    unlabelled = dataset(tree_copy / "test", summary)
    item = next(
        unlabelled[k] for k in range(len(unlabelled)) if unlabelled[k]["id"] == records[victim].id
    )
    assert item["view_ids"].tolist() == [1, 2]


def test_action_without_readable_view_is_dropped(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    loaded = load_annotations(tree_copy / "train" / "annotations.json")
    victim = loaded[2]
    corrupt(victim.clips[0])
    for clip in victim.clips[1:]:
        clip.unlink()
    with pytest.warns(UserWarning) as record:
        ds = dataset(tree_copy / "train", summary, max_skip_fraction=0.5)
    messages = [str(w.message) for w in record]
    assert any(f"{victim.clips[0]}: cannot decode" in m for m in messages)
    assert sum("file not found" in m for m in messages) == len(victim.clips) - 1
    assert ds.dropped_actions == [victim.id]
    assert len(ds) == len(loaded) - 1
    assert victim.id not in {ds[k]["id"] for k in range(len(ds))}


def test_too_many_bad_clips_is_an_error(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    records = load_annotations(tree_copy / "valid" / "annotations.json")
    for record in records[:3]:
        corrupt(record.clips[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ClipError, match=r"3 of \d+ clips .* more than max_skip_fraction=10.0%"):
            dataset(tree_copy / "valid", summary, max_skip_fraction=0.1)
        assert dataset(tree_copy / "valid", summary, max_skip_fraction=0.5).skipped_clips == 3


def test_split_without_annotations_is_unlabelled(tree_copy, mvfoul_tree):
    summary = mvfoul_tree[1]
    (tree_copy / "test" / "annotations.json").unlink()
    ds = dataset(tree_copy / "test", summary)
    assert len(ds) == summary["splits"]["test"]["actions"]
    assert [ds[k]["id"] for k in range(len(ds))] == [str(k) for k in range(len(ds))]
    assert ds[0]["action"].item() == ds[0]["offence"].item() == -1
    assert ds.class_counts()["action"].sum() == 0


def test_class_counts(mvfoul_tree):
    root, summary = mvfoul_tree
    counts = dataset(root / "train", summary).class_counts()
    assert counts["action"].tolist() == summary["splits"]["train"]["action_counts"]
    assert counts["offence"].tolist() == summary["splits"]["train"]["offence_counts"]


def test_config_validation():
    with pytest.raises(ValidationError, match="end"):
        VideoDataConfig(start=10, end=10)
    with pytest.raises(ValidationError, match="views_per_sample_train"):
        VideoDataConfig(views_per_sample_train=3, max_views=2)
    with pytest.raises(ValidationError, match="extra"):
        VideoDataConfig(stride=2)
    cfg = VideoDataConfig()
    assert (cfg.start, cfg.end, cfg.fps, cfg.frames, cfg.views_per_sample_train) == (
        63,
        87,
        17,
        16,
        2,
    )


def make_cfg(root: Path, summary, **kwargs) -> VideoDataConfig:
    return VideoDataConfig(root=root, size=(16, 16), batch_size=3, **window(summary), **kwargs)


def test_datamodule_loaders(mvfoul_tree):
    root, summary = mvfoul_tree
    dm = MVFoulDataModule(make_cfg(root, summary, balanced_sampler=True))
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ResumableSampler)
    offence = dm.dataset("train").targets("offence")
    weights = loader.sampler.weights
    counts = torch.bincount(offence)
    torch.testing.assert_close(weights * counts[offence].double(), torch.ones_like(weights))
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 2, 3, summary["frames"], 16, 16)
    assert batch["view_mask"].all()
    val = next(iter(dm.val_dataloader()))
    assert val["video"].shape[1] == int(val["n_views"].max())
    assert dm.class_counts()["offence"].tolist() == summary["splits"]["train"]["offence_counts"]


def test_datamodule_with_a_worker_process(mvfoul_tree):
    root, summary = mvfoul_tree
    dm = MVFoulDataModule(make_cfg(root, summary, num_workers=1, prefetch_factor=1))
    dm.setup("test")
    ids = [i for batch in dm.test_dataloader() for i in batch["id"]]
    assert ids == [r.id for r in load_annotations(root / "test" / "annotations.json")]
