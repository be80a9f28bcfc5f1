"""Pool per-view clip features ``(B, V, D)`` into one vector per action, honouring a view mask.

Every aggregator takes ``feats`` ``(B, V, D)``, ``mask`` ``(B, V)`` (True = real view) and
optionally ``view_ids`` ``(B, V)`` (each view's camera position; only the transformer reads it)
and returns ``(B, out_dim)``. Padded views are zeroed before anything reads them and are excluded
from every reduction, so their content (even NaN) cannot change the output.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

AggregationName = Literal["max", "mean", "attention", "transformer"]


class ViewAggregator(nn.Module):
    """Base class: zeroes padded views, then calls ``pool``."""

    out_dim: int

    def forward(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None = None) -> Tensor:
        if feats.ndim != 3 or mask.shape != feats.shape[:2]:
            raise ValueError(
                f"aggregator expects feats (B, V, D) and mask (B, V), got {tuple(feats.shape)} "
                f"and {tuple(mask.shape)}"
            )
        if view_ids is not None and view_ids.shape != mask.shape:
            raise ValueError(
                f"view_ids must be (B, V) = {tuple(mask.shape)}, got {tuple(view_ids.shape)}"
            )
        mask = mask.bool()
        return self.pool(feats.masked_fill(~mask[..., None], 0.0), mask, view_ids)

    def pool(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None) -> Tensor:
        raise NotImplementedError


class MaxAggregator(ViewAggregator):
    """Element-wise max over real views."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def pool(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None) -> Tensor:
        return feats.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)


class MeanAggregator(ViewAggregator):
    """Mean over real views."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = dim

    def pool(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None) -> Tensor:
        count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(feats.dtype)
        return feats.sum(dim=1) / count


class AttentionAggregator(ViewAggregator):
    """Weighted mean with a learned score per view (softmax over real views only)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.out_dim = dim
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def pool(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None) -> Tensor:
        scores = self.score(feats).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * feats).sum(dim=1)


class TransformerAggregator(ViewAggregator):
    """CLS token + learned view embeddings + a small pre-norm transformer encoder.

    The view embedding is indexed by each view's camera position ``view_ids`` (clip_0 is the live
    camera in MVFoul; default: the slot ``0..V-1``), so a missing clip does not move the other
    views' embeddings, and ``max_views`` bounds the camera positions.
    """

    def __init__(
        self, dim: int, hidden: int, heads: int, layers: int, dropout: float, max_views: int
    ):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"transformer hidden size {hidden} is not divisible by heads={heads}")
        self.out_dim = hidden
        self.max_views = max_views
        self.proj = nn.Linear(dim, hidden)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.view_embed = nn.Parameter(torch.zeros(1, max_views, hidden))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.view_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden,
            nhead=heads,
            dim_feedforward=4 * hidden,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)

    def pool(self, feats: Tensor, mask: Tensor, view_ids: Tensor | None) -> Tensor:
        b, v, _ = feats.shape
        if v > self.max_views:
            raise ValueError(
                f"transformer aggregator was built for at most max_views={self.max_views} views, "
                f"got {v}; raise model.max_views"
            )
        if view_ids is None:
            embed = self.view_embed[:, :v]
        else:
            real = view_ids[mask]
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.max_views):
                raise ValueError(
                    f"view positions {sorted(set(real.tolist()))} outside the "
                    f"max_views={self.max_views} view embeddings; raise model.max_views"
                )
            embed = self.view_embed[0, view_ids.masked_fill(~mask, 0)]
        tokens = self.proj(feats) + embed
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        padding = torch.cat([mask.new_zeros(b, 1), ~mask], dim=1)
        out = self.encoder(tokens, src_key_padding_mask=padding)
        return self.norm(out[:, 0])


def build_aggregator(
    name: AggregationName,
    dim: int,
    *,
    hidden: int = 256,
    heads: int = 4,
    layers: int = 1,
    dropout: float = 0.0,
    max_views: int = 8,
) -> ViewAggregator:
    """Aggregator ``name`` for ``dim``-wide view features."""
    if name == "max":
        return MaxAggregator(dim)
    if name == "mean":
        return MeanAggregator(dim)
    if name == "attention":
        return AttentionAggregator(dim, hidden)
    if name == "transformer":
        return TransformerAggregator(dim, hidden, heads, layers, dropout, max_views)
    raise ValueError(
        f"unknown aggregation {name!r}; expected one of max, mean, attention, transformer"
    )
