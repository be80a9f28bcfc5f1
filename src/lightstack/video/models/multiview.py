"""Multi-view, multi-task foul recognition model: one shared video backbone per view, a view
aggregator that honours the view mask, and two classification heads (action, offence/severity).

Backbones are ``torchvision.models.video`` constructors built with ``weights=None`` (nothing is
downloaded); pretrained weights come from a local file (``VideoModelConfig.pretrained_path``).
Input clips are expected in ``[0, 1]``; the model normalises them with the Kinetics-400 mean/std
that every torchvision video checkpoint was trained with.

Input size constraints per backbone (``(T, H, W)`` of one clip):

- ``r3d_18``, ``mc3_18``, ``r2plus1d_18``: any size (global average pooling).
- ``s3d``: ``T >= 5``, ``H, W >= 17``. torchvision's fixed ``AvgPool3d((2, 7, 7))`` is replaced
  by global average pooling, which is identical at the native ``16x224x224`` and lets smaller
  clips through.
- ``mvit_v2_s``: exactly ``16x224x224`` (its positional embeddings are built for that size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models import video as tv_video

from lightstack.core.config import Section
from lightstack.video.models.aggregation import build_aggregator

BackboneName = Literal["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s"]

# Kinetics-400 statistics used by all torchvision video weights.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class VideoModelConfig(Section):
    """The multi-view model (``model:`` section of a video run)."""

    backbone: BackboneName = "r3d_18"
    pretrained_path: str | None = Field(
        None,
        description="local torchvision state_dict, lightstack/Lightning checkpoint or "
        ".safetensors file with backbone weights",
    )
    normalize: bool = Field(True, description="normalise [0, 1] clips with Kinetics mean/std")
    channels_last: bool = Field(
        False,
        description="run the backbone in channels-last-3d memory format (NDHWC), the layout "
        "cuDNN's tensor-core 3D convolutions prefer: 1.65x faster steps in bf16-mixed on an "
        "H100, but far slower in strict fp32 (docs/benchmarks.md)",
    )
    aggregation: Literal["max", "mean", "attention", "transformer"] = "max"
    transformer_layers: int = Field(1, ge=1, le=2)
    heads: int = Field(4, ge=1)
    max_views: int = Field(8, ge=1, description="view embeddings of the transformer aggregator")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden: int = Field(256, ge=1)
    num_actions: int = Field(8, ge=2)
    num_offence: int = Field(4, ge=2)
    ema: bool = Field(False, description="keep an EMA of the weights (wired by the trainer)")
    ema_decay: float = Field(0.999, gt=0.0, lt=1.0)
    compile: bool = Field(
        False,
        description="torch.compile the backbone when training starts (core.compile.maybe_compile; "
        "the first steps are slower while it compiles)",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> VideoModelConfig:
        if self.aggregation == "transformer" and self.hidden % self.heads:
            raise ValueError(
                f"hidden={self.hidden} must be divisible by heads={self.heads} "
                "for the transformer aggregation"
            )
        return self


@dataclass(frozen=True)
class _BackboneSpec:
    feat_dim: int
    head_attr: str  # classification head replaced by Identity
    min_thw: tuple[int, int, int] = (1, 1, 1)
    exact_thw: tuple[int, int, int] | None = None


_SPECS: dict[str, _BackboneSpec] = {
    "r3d_18": _BackboneSpec(512, "fc"),
    "mc3_18": _BackboneSpec(512, "fc"),
    "r2plus1d_18": _BackboneSpec(512, "fc"),
    "s3d": _BackboneSpec(1024, "classifier", min_thw=(5, 17, 17)),
    "mvit_v2_s": _BackboneSpec(768, "head", exact_thw=(16, 224, 224)),
}


def _spec(name: str) -> _BackboneSpec:
    if name not in _SPECS:
        raise ValueError(f"unknown video backbone {name!r}; expected one of {sorted(_SPECS)}")
    return _SPECS[name]


def build_backbone(name: BackboneName) -> tuple[nn.Module, int]:
    """Randomly initialised torchvision video backbone returning ``(N, feat_dim)`` features
    for ``(N, C, T, H, W)`` clips."""
    spec = _spec(name)
    model = getattr(tv_video, name)(weights=None)
    setattr(model, spec.head_attr, nn.Identity())
    if name == "s3d":
        model.avgpool = nn.AdaptiveAvgPool3d(1)
    return model, spec.feat_dim


def check_clip_shape(name: BackboneName, thw: tuple[int, int, int]) -> None:
    """Raise ``ValueError`` when clips of size ``(T, H, W)`` are too small for backbone ``name``."""
    spec = _spec(name)
    thw = tuple(int(s) for s in thw)
    if spec.exact_thw is not None and thw != spec.exact_thw:
        raise ValueError(
            f"backbone {name} needs clips of exactly (T, H, W) = {spec.exact_thw}, got {thw}; "
            "set data.frames and data.size accordingly"
        )
    if any(s < m for s, m in zip(thw, spec.min_thw, strict=True)):
        raise ValueError(
            f"backbone {name} needs clips of at least (T, H, W) = {spec.min_thw}, got {thw}"
        )


def _blocks(name: str, backbone: nn.Module) -> list[nn.Module]:
    if name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        return [backbone.stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    if name == "s3d":
        # Stages end before each max-pool: stem, then four inception stages.
        groups: list[list[nn.Module]] = [[]]
        for layer in backbone.features:
            if isinstance(layer, nn.MaxPool3d) and groups[-1]:
                groups.append([])
            groups[-1].append(layer)
        return [nn.Sequential(*g) for g in groups]
    if name == "mvit_v2_s":
        # Patch embedding (+ CLS/positional parameters), then one group per resolution stage;
        # a stage ends at the block that projects to the next width.
        groups = [[backbone.conv_proj, backbone.pos_encoding], []]
        for i, block in enumerate(backbone.blocks):
            groups[-1].append(block)
            if getattr(block, "project", None) is not None and i < len(backbone.blocks) - 1:
                groups.append([])
        groups[-1].append(backbone.norm)
        return [nn.ModuleList(g) for g in groups]
    raise ValueError(f"unknown video backbone {name!r}")


def backbone_flops(name: BackboneName, thw: tuple[int, int, int]) -> int:
    """Forward FLOPs of the backbone for one clip of size ``(T, H, W)`` (counted on the meta
    device, so nothing is computed or allocated)."""
    check_clip_shape(name, thw)
    with torch.device("meta"):
        model, _ = build_backbone(name)
        clip = torch.empty(1, 3, *thw)
    with FlopCounterMode(display=False) as counter:
        model(clip)
    return int(counter.get_total_flops())


def _strip_to_backbone(state: dict[str, Tensor], head_attr: str) -> dict[str, Tensor]:
    """Map checkpoint keys onto backbone keys.

    Keys containing a ``backbone.`` segment (lightstack/Lightning checkpoints, e.g.
    ``model.backbone.layer1...``) keep only what follows it; otherwise the file is taken to be a
    plain torchvision state_dict and its classification head is dropped.
    """
    state = {k.replace("_orig_mod.", "").removeprefix("module."): v for k, v in state.items()}
    marked = {}
    for key, value in state.items():
        idx = key.find("backbone.")
        if idx == 0 or (idx > 0 and key[idx - 1] == "."):
            marked[key[idx + len("backbone.") :]] = value
    if marked:
        return marked
    return {k: v for k, v in state.items() if not k.startswith(f"{head_attr}.")}


def _read_state(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"cannot read pretrained weights {path}: {exc}. Expected a torchvision state_dict "
            "or a Lightning checkpoint loadable with torch.load(weights_only=True)"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"pretrained weights {path}: expected a state_dict (name -> tensor) or a checkpoint "
            f"with a 'state_dict' entry, got {type(obj).__name__}"
        )
    return obj


def load_backbone_weights(backbone: nn.Module, name: BackboneName, path: str | Path) -> None:
    """Load backbone weights from a local file; every backbone weight must be present."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights file not found: {path} (docs/video.md, 'Pretrained backbone "
            "weights', says how to save torchvision's Kinetics weights to such a file)"
        )
    state = _strip_to_backbone(_read_state(path), _spec(name).head_attr)
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ValueError(f"pretrained weights {path} do not fit backbone {name}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights {path} do not match backbone {name}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def _head(in_dim: int, hidden: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.LayerNorm(in_dim),
        nn.Dropout(dropout),
        nn.Linear(in_dim, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, classes),
    )


class MultiViewModel(nn.Module):
    """Shared backbone over the real views of each action, aggregation, two heads.

    ``forward(video (B, V, C, T, H, W) in [0, 1], view_mask (B, V) bool, view_ids (B, V) long)``
    (``view_ids``: each view's camera position, for the transformer aggregation) returns
    ``{"action": (B, num_actions), "offence": (B, num_offence), "features": (B, F)}`` logits and
    pooled features. Only the real views go through the backbone: padding costs no compute and
    cannot influence batch-norm statistics or the output.
    """

    def __init__(self, cfg: VideoModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone, feat_dim = build_backbone(cfg.backbone)
        if cfg.pretrained_path:
            load_backbone_weights(self.backbone, cfg.backbone, cfg.pretrained_path)
        if cfg.channels_last:
            self.backbone.to(memory_format=torch.channels_last_3d)
        self.aggregator = build_aggregator(
            cfg.aggregation,
            feat_dim,
            hidden=cfg.hidden,
            heads=cfg.heads,
            layers=cfg.transformer_layers,
            dropout=cfg.dropout,
            max_views=cfg.max_views,
        )
        out_dim = self.aggregator.out_dim
        self.action_head = _head(out_dim, cfg.hidden, cfg.num_actions, cfg.dropout)
        self.offence_head = _head(out_dim, cfg.hidden, cfg.num_offence, cfg.dropout)
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), False)

    def backbone_blocks(self) -> list[nn.Module]:
        """Backbone stages ordered input -> output (for the freezing callbacks)."""
        return backbone_blocks(self)

    def flops_per_sample(self, thw: tuple[int, int, int], views: int) -> int:
        """Backbone forward FLOPs for one action of ``views`` clips (heads are negligible)."""
        return views * backbone_flops(self.cfg.backbone, thw)

    def forward(
        self, video: Tensor, view_mask: Tensor | None = None, view_ids: Tensor | None = None
    ) -> dict[str, Tensor]:
        if video.ndim != 6 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, V, 3, T, H, W), got {tuple(video.shape)}")
        b, v = video.shape[:2]
        check_clip_shape(self.cfg.backbone, tuple(video.shape[3:]))
        if view_mask is None:
            view_mask = torch.ones(b, v, dtype=torch.bool, device=video.device)
        elif view_mask.shape != (b, v):
            raise ValueError(f"view_mask must be (B, V) = {(b, v)}, got {tuple(view_mask.shape)}")
        view_mask = view_mask.bool()
        if not bool(view_mask.any(dim=1).all()):
            raise ValueError("every action needs at least one real view (view_mask row all False)")
        clips = video[view_mask]
        if self.cfg.normalize:
            clips = (clips - self.mean.to(clips.dtype)) / self.std.to(clips.dtype)
        if self.cfg.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        real = self.backbone(clips)
        feats = real.new_zeros(b, v, real.shape[-1])
        feats[view_mask] = real
        pooled = self.aggregator(feats, view_mask, view_ids)
        return {
            "action": self.action_head(pooled),
            "offence": self.offence_head(pooled),
            "features": pooled,
        }


def backbone_blocks(model: MultiViewModel) -> list[nn.Module]:
    """Backbone stages of ``model`` ordered input -> output, e.g. r3d: stem, layer1..layer4.

    Grouping containers are fresh ``nn.Sequential``/``nn.ModuleList`` objects that reference the
    model's own modules, so freezing them freezes the model.
    """
    return _blocks(model.cfg.backbone, model.backbone)
