"""Class weights, focal loss and the two-task loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightstack.video.losses import (
    FocalLoss,
    LossConfig,
    MultiTaskLoss,
    class_weights_from_counts,
)

torch.set_num_threads(1)


def test_inverse_weights_are_normalised_to_mean_one():
    w = class_weights_from_counts([10, 30, 60], "inverse")
    raw = torch.tensor([1 / 10, 1 / 30, 1 / 60])
    torch.testing.assert_close(w, raw * 3 / raw.sum())
    assert w.mean().item() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]


def test_effective_number_weights_follow_cui_et_al():
    beta = 0.99
    counts = [5, 50, 500]
    w = class_weights_from_counts(counts, "effective_number", beta)
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in counts])
    torch.testing.assert_close(w, (raw * 3 / raw.sum()).float())
    # beta = 0 means every class has an effective number of 1: uniform weights
    torch.testing.assert_close(
        class_weights_from_counts(counts, "effective_number", 0.0), torch.ones(3)
    )
    # beta -> 1 approaches inverse frequency
    near_inverse = class_weights_from_counts(counts, "effective_number", 1 - 1e-9)
    torch.testing.assert_close(
        near_inverse, class_weights_from_counts(counts, "inverse"), rtol=1e-3, atol=1e-4
    )


def test_class_weight_edge_cases():
    assert class_weights_from_counts([1, 2], "none") is None
    w = class_weights_from_counts([0, 4], "inverse")
    assert torch.isfinite(w).all() and w[0] > w[1]
    with pytest.raises(ValueError, match="non-negative"):
        class_weights_from_counts([3, -1], "inverse")
    with pytest.raises(ValueError, match=">= 2"):
        class_weights_from_counts([3], "inverse")


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(smoothing, weighted):
    torch.manual_seed(0)
    logits = torch.randn(16, 4) * 3
    target = torch.randint(0, 4, (16,))
    weight = torch.tensor([0.5, 2.0, 1.0, 3.0]) if weighted else None
    focal = FocalLoss(gamma=0.0, weight=weight, label_smoothing=smoothing)(logits, target)
    ce = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(focal, ce)


def test_focal_value_and_down_weighting_of_easy_examples():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([0, 0])
    p = torch.softmax(logits, dim=-1)[:, 0]
    expected = (-((1 - p) ** 2) * torch.log(p)).mean()
    torch.testing.assert_close(FocalLoss(gamma=2.0)(logits, target), expected)
    # the confident example loses a larger share of its CE than the uncertain one
    per_sample = FocalLoss(gamma=2.0)
    easy = per_sample(logits[:1], target[:1]) / F.cross_entropy(logits[:1], target[:1])
    hard = per_sample(logits[1:], target[1:]) / F.cross_entropy(logits[1:], target[1:])
    assert easy < hard < 1


def test_focal_alpha_scales_per_class_and_is_checked():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 1])
    base = FocalLoss(gamma=1.0)
    a0 = FocalLoss(gamma=1.0, alpha=[2.0, 0.0])(logits[:1], target[:1])
    torch.testing.assert_close(a0, 2.0 * base(logits[:1], target[:1]))
    torch.testing.assert_close(
        FocalLoss(gamma=1.0, alpha=0.25)(logits, target), 0.25 * base(logits, target)
    )
    with pytest.raises(ValueError, match="alpha has 3 entries but the logits have 2 classes"):
        FocalLoss(alpha=[1.0, 1.0, 1.0])(logits, target)


def test_focal_gradients_flow():
    logits = torch.randn(4, 3, requires_grad=True)
    FocalLoss(gamma=2.0)(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def _batch() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    outputs = {"action": torch.randn(6, 8), "offence": torch.randn(6, 4)}
    batch = {"action": torch.randint(0, 8, (6,)), "offence": torch.randint(0, 4, (6,))}
    return outputs, batch


def test_multitask_loss_sums_weighted_task_losses():
    outputs, batch = _batch()
    cfg = LossConfig(task_weights={"action": 0.5, "offence": 2.0})
    total, parts = MultiTaskLoss(cfg)(outputs, batch)
    action = F.cross_entropy(outputs["action"], batch["action"])
    offence = F.cross_entropy(outputs["offence"], batch["offence"])
    torch.testing.assert_close(parts["action"], action)
    torch.testing.assert_close(parts["offence"], offence)
    torch.testing.assert_close(total, 0.5 * action + 2.0 * offence)


def test_multitask_weighted_ce_uses_class_counts():
    outputs, batch = _batch()
    counts_a, counts_o = [100, 50, 20, 10, 10, 5, 40, 2], [300, 200, 80, 5]
    cfg = LossConfig(kind="weighted_ce", class_weights="inverse", label_smoothing=0.1)
    _, parts = MultiTaskLoss(cfg, counts_a, counts_o)(outputs, batch)
    w_o = class_weights_from_counts(counts_o, "inverse")
    expected = F.cross_entropy(
        outputs["offence"], batch["offence"], weight=w_o, label_smoothing=0.1
    )
    torch.testing.assert_close(parts["offence"], expected)


def test_multitask_focal_with_effective_number():
    outputs, batch = _batch()
    cfg = LossConfig(kind="focal", class_weights="effective_number", focal_gamma=0.0)
    counts_o = [300, 200, 80, 5]
    _, parts = MultiTaskLoss(cfg, [10] * 8, counts_o)(outputs, batch)
    w_o = class_weights_from_counts(counts_o, "effective_number", 0.999)
    torch.testing.assert_close(
        parts["offence"], F.cross_entropy(outputs["offence"], batch["offence"], weight=w_o)
    )
    assert math.isfinite(parts["action"].item())


def test_loss_config_errors():
    with pytest.raises(ValueError, match=r"weighted_ce.*needs class_weights"):
        LossConfig(kind="weighted_ce")
    with pytest.raises(ValueError, match="use kind 'weighted_ce'"):
        LossConfig(kind="ce", class_weights="inverse")
    with pytest.raises(ValueError, match="focal_alpha is only used by kind 'focal'"):
        LossConfig(focal_alpha=0.25)
    with pytest.raises(ValueError, match="task_weights"):
        LossConfig(task_weights={"action": 1.0, "severity": 1.0})
    with pytest.raises(ValueError, match="needs the offence class counts"):
        MultiTaskLoss(LossConfig(kind="weighted_ce", class_weights="inverse"), [1] * 8, None)
