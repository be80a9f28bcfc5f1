"""Multi-view model: backbones, aggregators honouring the view mask, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision.models import video as tv_video

from lightstack.core.config import ConfigError, load_config
from lightstack.video.config import VideoConfig
from lightstack.video.data.decode import vars_frame_indices, window_indices
from lightstack.video.models.aggregation import build_aggregator
from lightstack.video.models.multiview import (
    MultiViewModel,
    VideoModelConfig,
    _strip_to_backbone,
    backbone_blocks,
    build_backbone,
    check_clip_shape,
)

torch.set_num_threads(1)
BACKBONES = {"r3d_18": 512, "mc3_18": 512, "r2plus1d_18": 512, "s3d": 1024, "mvit_v2_s": 768}
AGGREGATIONS = ["max", "mean", "attention", "transformer"]
VARS_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "video" / "vars_mvit.yaml"


class StandIn(nn.Module):
    """Tiny clip encoder with batch norm, used in place of a real backbone."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1),
            nn.BatchNorm3d(4),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(4, dim),
        )
        self.seen: list[int] = []

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        self.seen.append(clips.shape[0])
        return self.net(clips)


def tiny_model(aggregation: str) -> MultiViewModel:
    """s3d builds fastest; its backbone is swapped for the stand-in (feature width 1024)."""
    torch.manual_seed(0)
    cfg = VideoModelConfig(backbone="s3d", aggregation=aggregation, hidden=32, heads=4, dropout=0.3)
    model = MultiViewModel(cfg)
    model.backbone = StandIn(1024)
    return model.eval()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_with_its_feature_width_and_blocks(name):
    model = MultiViewModel(VideoModelConfig(backbone=name))  # built by build_backbone(name)
    assert model.aggregator.out_dim == BACKBONES[name]  # "max" keeps the feature width
    head = {"s3d": "classifier", "mvit_v2_s": "head"}.get(name, "fc")
    assert isinstance(getattr(model.backbone, head), nn.Identity)
    blocks = backbone_blocks(model)
    assert len(blocks) == 5
    ids = [id(p) for b in blocks for p in b.parameters()]
    assert len(ids) == len(set(ids))  # no parameter in two blocks
    assert set(ids) == {id(p) for p in model.backbone.parameters()}  # every one in a block
    assert all(any(True for _ in b.parameters()) for b in blocks)
    params = list(model.backbone.parameters())  # registration order: input first
    assert id(params[0]) in {id(p) for p in blocks[0].parameters()}
    assert id(params[-1]) in {id(p) for p in blocks[-1].parameters()}
    via_method = [{id(p) for p in b.parameters()} for b in model.backbone_blocks()]
    assert via_method == [{id(p) for p in b.parameters()} for b in blocks]


def test_r3d_blocks_are_the_resnet_stages():
    model = MultiViewModel(VideoModelConfig(backbone="r3d_18"))
    bb = model.backbone
    assert backbone_blocks(model) == [bb.stem, bb.layer1, bb.layer2, bb.layer3, bb.layer4]


def test_r3d_forward_on_a_small_multi_view_batch():
    torch.manual_seed(0)
    model = MultiViewModel(VideoModelConfig(backbone="r3d_18", aggregation="mean", hidden=16))
    video = torch.rand(2, 2, 3, 4, 32, 32)
    mask = torch.tensor([[True, True], [True, False]])
    out = model(video, mask)
    assert out["action"].shape == (2, 8)
    assert out["offence"].shape == (2, 4)
    assert out["features"].shape == (2, 512)
    assert torch.isfinite(out["action"]).all() and torch.isfinite(out["offence"]).all()
    (out["action"].sum() + out["offence"].sum()).backward()
    assert model.backbone.stem[0].weight.grad is not None


def test_channels_last_changes_the_layout_not_the_result():
    torch.manual_seed(0)
    cfg = VideoModelConfig(backbone="r2plus1d_18", aggregation="mean", hidden=16)
    default = MultiViewModel(cfg).eval()
    fast = MultiViewModel(cfg.model_copy(update={"channels_last": True})).eval()
    fast.load_state_dict(default.state_dict())
    conv = fast.backbone.stem[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    video = torch.rand(2, 2, 3, 2, 16, 16)
    with torch.no_grad():
        expected, got = default(video), fast(video)
    torch.testing.assert_close(got["action"], expected["action"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got["offence"], expected["offence"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "thw"), [("mc3_18", (2, 16, 16)), ("r2plus1d_18", (2, 16, 16)), ("s3d", (5, 17, 17))]
)
def test_small_backbone_forwards(name, thw):
    backbone, dim = build_backbone(name)
    with torch.no_grad():
        out = backbone.eval()(torch.rand(2, 3, *thw))
    assert out.shape == (2, dim)


@pytest.mark.slow
def test_mvit_forward_at_native_size():
    backbone, dim = build_backbone("mvit_v2_s")
    with torch.no_grad():
        out = backbone.eval()(torch.rand(1, 3, 16, 224, 224))
    assert out.shape == (1, dim)


def test_too_small_or_wrong_clip_sizes_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"s3d needs clips of at least.*\(5, 17, 17\).*\(4, 32, 32\)"
    ):
        check_clip_shape("s3d", (4, 32, 32))
    with pytest.raises(ValueError, match=r"mvit_v2_s needs clips of exactly.*\(16, 224, 224\)"):
        check_clip_shape("mvit_v2_s", (16, 112, 112))
    check_clip_shape("mvit_v2_s", (16, 224, 224))
    model = tiny_model("max")
    with pytest.raises(ValueError, match="at least"):
        model(torch.rand(1, 2, 3, 4, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, V, 3, T, H, W\)"):
        model(torch.rand(2, 3, 8, 32, 32))
    with pytest.raises(ValueError, match="at least one real view"):
        model(torch.rand(2, 2, 3, 8, 32, 32), torch.tensor([[True, False], [False, False]]))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_padding_views_do_not_change_the_output(aggregation):
    model = tiny_model(aggregation)
    torch.manual_seed(1)
    real = torch.rand(1, 2, 3, 8, 32, 32)
    garbage = torch.randn(1, 2, 3, 8, 32, 32) * 50
    padded = torch.cat([real, garbage], dim=1)
    mask = torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        alone = model(real)
        with_padding = model(padded, mask)
    for key in ("action", "offence", "features"):
        torch.testing.assert_close(with_padding[key], alone[key], rtol=1e-5, atol=1e-5)
    # the backbone only ever saw the two real clips
    assert model.backbone.seen == [2, 2]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_batched_actions_with_different_view_counts_match_single_runs(aggregation):
    model = tiny_model(aggregation)
    torch.manual_seed(2)
    video = torch.rand(3, 3, 3, 8, 32, 32)
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    with torch.no_grad():
        batched = model(video, mask)
        for i in range(3):
            single = model(video[i : i + 1, : int(mask[i].sum())])
            torch.testing.assert_close(
                batched["action"][i], single["action"][0], rtol=1e-5, atol=1e-5
            )


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_aggregators_ignore_nan_in_padded_slots_and_see_real_views(aggregation):
    torch.manual_seed(0)
    agg = build_aggregator(aggregation, 6, hidden=8, heads=2, layers=2).eval()
    feats = torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    poisoned = feats.clone()
    poisoned[~mask] = float("nan")
    out = agg(poisoned, mask)
    assert out.shape == (2, agg.out_dim)
    torch.testing.assert_close(out, agg(feats, mask))
    changed = feats.clone()
    changed[0, 1] += 1.0
    assert not torch.allclose(agg(changed, mask)[0], out[0])


def test_max_and_mean_aggregators_compute_masked_reductions():
    feats = torch.tensor([[[1.0, -5.0], [3.0, -1.0], [100.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(build_aggregator("max", 2)(feats, mask), torch.tensor([[3.0, -1.0]]))
    torch.testing.assert_close(
        build_aggregator("mean", 2)(feats, mask), torch.tensor([[2.0, -3.0]])
    )
    attention = build_aggregator("attention", 2, hidden=4)
    same = torch.tensor([[[2.0, 7.0], [2.0, 7.0], [-9.0, 0.0]]])
    torch.testing.assert_close(attention(same, mask), torch.tensor([[2.0, 7.0]]))


def test_transformer_rejects_more_views_than_embeddings():
    agg = build_aggregator("transformer", 4, hidden=8, heads=2, max_views=2)
    with pytest.raises(ValueError, match="max_views=2"):
        agg(torch.randn(1, 3, 4), torch.ones(1, 3, dtype=torch.bool))


def test_transformer_keeps_camera_positions_of_the_remaining_views():
    torch.manual_seed(0)
    agg = build_aggregator("transformer", 4, hidden=8, heads=2, max_views=3).eval()
    f1, f2 = torch.randn(1, 1, 4), torch.randn(1, 1, 4)
    # clip_0 missing: clip_1 and clip_2 at their positions 1 and 2 ...
    kept = agg(torch.cat([f1, f2], 1), torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 2]]))
    # ... are what the three-view action gives with clip_0 masked out
    full = torch.cat([torch.randn(1, 1, 4), f1, f2], 1)
    torch.testing.assert_close(kept, agg(full, torch.tensor([[False, True, True]])))
    shifted = agg(torch.cat([f1, f2], 1), torch.ones(1, 2, dtype=torch.bool))
    assert not torch.allclose(kept, shifted)  # slots 0 and 1 are other cameras' embeddings
    with pytest.raises(ValueError, match=r"view positions \[1, 3\] .* max_views=3"):
        agg(torch.cat([f1, f2], 1), torch.ones(1, 2, dtype=torch.bool), torch.tensor([[1, 3]]))


def test_config_validation():
    with pytest.raises(ValueError, match="divisible by heads"):
        VideoModelConfig(aggregation="transformer", hidden=30, heads=4)
    with pytest.raises(ValueError, match="transformer_layers"):
        VideoModelConfig(transformer_layers=3)
    with pytest.raises(ValueError, match="backbone"):
        VideoModelConfig(backbone="resnet50")


def test_flops_per_sample_matches_the_published_r3d_cost():
    model = tiny_model("max")
    model.cfg = VideoModelConfig(backbone="r3d_18")
    flops = model.flops_per_sample((16, 112, 112), views=2)
    # torchvision lists r3d_18 at 40.70 GMACs per 16x112x112 clip; FLOPs = 2 * MACs
    assert flops == pytest.approx(2 * 2 * 40.70e9, rel=0.01)


# -- pretrained weights -------------------------------------------------------------------------


def _s3d_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    backbone, _ = build_backbone("s3d")
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    state["classifier.1.weight"] = torch.randn(400, 1024, 1, 1, 1)  # torchvision's Kinetics head
    state["classifier.1.bias"] = torch.randn(400)
    return state


def _assert_loaded(model: MultiViewModel, state: dict[str, torch.Tensor]) -> None:
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_loads_a_torchvision_state_dict(tmp_path):
    state = _s3d_weights()
    path = tmp_path / "s3d.pth"
    torch.save(state, path)
    model = MultiViewModel(VideoModelConfig(backbone="s3d", pretrained_path=str(path)))
    _assert_loaded(model, state)


def test_loads_a_lightning_checkpoint_and_safetensors(tmp_path):
    state = _s3d_weights()
    backbone_only = {k: v for k, v in state.items() if not k.startswith("classifier")}
    ckpt = {
        "epoch": 3,
        "state_dict": {
            **{f"model._orig_mod.backbone.{k}": v for k, v in backbone_only.items()},
            "model.action_head.2.weight": torch.randn(8, 4),
        },
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    model = MultiViewModel(
        VideoModelConfig(backbone="s3d", pretrained_path=str(tmp_path / "last.ckpt"))
    )
    _assert_loaded(model, state)
    save_file(
        {f"backbone.{k}": v.contiguous() for k, v in backbone_only.items()},
        tmp_path / "w.safetensors",
    )
    model = MultiViewModel(
        VideoModelConfig(backbone="s3d", pretrained_path=str(tmp_path / "w.safetensors"))
    )
    _assert_loaded(model, state)


def test_bad_weight_files_name_the_file(tmp_path):
    state = _s3d_weights()
    path = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("features.15")}, path)
    with pytest.raises(ValueError, match=r"partial\.pth.*s3d.*missing keys.*features\.15"):
        MultiViewModel(VideoModelConfig(backbone="s3d", pretrained_path=str(path)))

    mc3, _ = build_backbone("mc3_18")
    wrong = tmp_path / "mc3.pth"
    torch.save(mc3.state_dict(), wrong)
    with pytest.raises(ValueError, match=r"mc3\.pth.*do not match backbone s3d"):
        MultiViewModel(VideoModelConfig(backbone="s3d", pretrained_path=str(wrong)))

    shape = tmp_path / "shape.pth"
    bad = dict(state)
    bad["features.0.0.0.weight"] = torch.zeros(1, 1, 1, 1, 1)
    torch.save(bad, shape)
    with pytest.raises(ValueError, match=r"shape\.pth do not fit backbone s3d"):
        MultiViewModel(VideoModelConfig(backbone="s3d", pretrained_path=str(shape)))

    pickled = tmp_path / "object.pth"
    torch.save({"model": nn.Linear(2, 2)}, pickled)
    with pytest.raises(ValueError, match=r"cannot read pretrained weights .*object\.pth"):
        MultiViewModel(VideoModelConfig(backbone="s3d", pretrained_path=str(pickled)))

    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        MultiViewModel(
            VideoModelConfig(backbone="s3d", pretrained_path=str(tmp_path / "nowhere.pth"))
        )


def test_torchvision_mvit_state_dict_maps_onto_the_backbone():
    # torchvision's mvit_v2_s(weights="KINETICS400_V1").state_dict() has this layout (built on
    # the meta device: names and shapes only, nothing allocated)
    with torch.device("meta"):
        published = tv_video.mvit_v2_s().state_dict()
        backbone, _ = build_backbone("mvit_v2_s")
    mapped = _strip_to_backbone(published, "head")
    expected = backbone.state_dict()
    assert "head.1.weight" in published and sorted(mapped) == sorted(expected)
    assert all(mapped[k].shape == v.shape for k, v in expected.items())


def test_vars_config_is_mvit_at_16x224_with_local_weights():
    cfg = load_config(VARS_CONFIG, [], VideoConfig)
    model, data = cfg.model, cfg.data
    assert (model.backbone, model.aggregation, cfg.trainer.precision) == (
        "mvit_v2_s",
        "attention",
        "bf16-mixed",
    )
    assert (data.frames, data.size, data.views_per_sample_train, data.max_views) == (
        16,
        (224, 224),
        2,
        5,
    )
    assert window_indices(data.frames, data.start, data.end, data.fps) == vars_frame_indices(
        63, 87, 17
    )
    assert model.pretrained_path == "weights/mvit_v2_s-kinetics400.pth"
    with pytest.raises(ConfigError, match="exactly"):  # MViT's positional embeddings: 16x224
        load_config(VARS_CONFIG, ["data.frames=8"], VideoConfig)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_bf16_autocast_on_gpu_keeps_padding_invariance(aggregation):
    torch.manual_seed(0)
    cfg = VideoModelConfig(backbone="r3d_18", aggregation=aggregation, hidden=32)
    model = MultiViewModel(cfg).cuda().eval()
    real = torch.rand(2, 2, 3, 4, 32, 32, device="cuda")
    padded = torch.cat([real, torch.rand_like(real) * 10], dim=1)
    mask = torch.tensor([[True, True, False, False]] * 2, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        alone = model(real)
        with_padding = model(padded, mask)
    torch.testing.assert_close(with_padding["action"], alone["action"])
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(padded, mask)
    (out["action"].float().sum() + out["offence"].float().sum()).backward()
    assert model.backbone.stem[0].weight.grad.isfinite().all()
