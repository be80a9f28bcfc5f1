"""Video augmentation: temporal consistency, ranges, masks, severity-aware sampling."""

from __future__ import annotations

import pytest
import torch

from lightstack.video.augment import AugmentConfig, VideoAugment

torch.set_num_threads(1)
ALWAYS = {"p": 1.0, "hflip_p": 1.0, "crop_p": 1.0, "jitter_p": 1.0, "rotation_p": 1.0}


def still_clips(b: int, v: int, t: int = 4, size: int = 16) -> torch.Tensor:
    """Clips whose frames are all the same image (different per clip)."""
    frames = torch.rand(b, v, 3, 1, size, size)
    return frames.expand(-1, -1, -1, t, -1, -1).contiguous()


def test_every_frame_of_a_clip_gets_the_same_transform():
    torch.manual_seed(0)
    video = still_clips(3, 2)
    out = VideoAugment(AugmentConfig(**ALWAYS))(video)
    assert out.shape == video.shape and out.dtype == video.dtype
    # frames were identical, so identical parameters keep them identical
    torch.testing.assert_close(out, out[:, :, :, :1].expand_as(out))
    # and every clip was changed
    assert (out - video).abs().amax(dim=(2, 3, 4, 5)).min() > 1e-3


def test_values_stay_in_range():
    torch.manual_seed(1)
    cfg = AugmentConfig(**ALWAYS, brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    out = VideoAugment(cfg)(torch.rand(2, 2, 3, 3, 16, 16))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_disabled_or_eval_mode_is_identity():
    video = torch.rand(2, 2, 3, 2, 8, 8)
    assert VideoAugment(AugmentConfig(enabled=False, **ALWAYS))(video) is video
    assert VideoAugment(AugmentConfig(**ALWAYS)).eval()(video) is video
    assert VideoAugment(AugmentConfig(**{**ALWAYS, "p": 0.0}))(video) is video


def test_padded_views_are_left_alone():
    torch.manual_seed(2)
    video = still_clips(2, 3)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    out = VideoAugment(AugmentConfig(**ALWAYS))(video, view_mask=mask)
    torch.testing.assert_close(out[~mask], video[~mask])
    assert (out[mask] - video[mask]).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-3


def test_severity_aware_augments_rare_classes_more_often():
    torch.manual_seed(3)
    cfg = AugmentConfig(
        p=0.2,
        hflip_p=1.0,
        crop_p=0.0,
        jitter_p=0.0,
        rotation_p=0.0,
        severity_aware=True,
        per_class_strength=[1.0, 1.0, 1.0, 4.0],
    )
    aug = VideoAugment(cfg)
    n = 400
    offence = torch.tensor([0, 3]).repeat(n // 2)
    # left half 0, right half 1: a horizontal flip always changes the clip
    video = torch.zeros(n, 1, 3, 2, 4, 4)
    video[..., 2:] = 1.0
    out = aug(video, offence)
    changed = (out != video).flatten(1).any(dim=1).float()
    rate0, rate3 = changed[offence == 0].mean().item(), changed[offence == 3].mean().item()
    assert rate0 == pytest.approx(0.2, abs=0.08)
    assert rate3 == pytest.approx(0.8, abs=0.08)
    torch.testing.assert_close(
        aug.sample_probability(torch.tensor([0, 3]), 2, torch.device("cpu")),
        torch.tensor([0.2, 0.8]),
    )


def test_severity_aware_probability_is_clamped_and_checked():
    aug = VideoAugment(AugmentConfig(p=0.5, severity_aware=True, per_class_strength=[1.0, 3.0]))
    probs = aug.sample_probability(torch.tensor([0, 1]), 2, torch.device("cpu"))
    torch.testing.assert_close(probs, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match=r"per_class_strength has 2 entries.*offence class 3"):
        aug(torch.rand(1, 1, 3, 1, 8, 8), torch.tensor([3]))
    with pytest.raises(ValueError, match="needs the offence labels"):
        aug(torch.rand(1, 1, 3, 1, 8, 8))


def test_config_validation():
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.9, 0.5))
    with pytest.raises(ValueError, match="per_class_strength"):
        AugmentConfig(per_class_strength=[1.0, -1.0])
    with pytest.raises(ValueError, match="hflip_p"):
        AugmentConfig(hflip_p=1.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_batch_device():
    video = still_clips(2, 2).cuda()
    out = VideoAugment(AugmentConfig(**ALWAYS)).cuda()(video, torch.tensor([0, 1]).cuda())
    assert out.device == video.device
    torch.testing.assert_close(out, out[:, :, :, :1].expand_as(out))
