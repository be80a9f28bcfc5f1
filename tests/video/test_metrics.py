"""Video metrics: accuracy, balanced accuracy as sklearn / the SoccerNet evaluator compute it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightstack.video.labels import ACTION_CLASSES, OFFENCE_CLASSES
from lightstack.video.metrics import VideoMetrics, balanced_accuracy, plot_confusion

torch.set_num_threads(1)


def one_hot_logits(pred: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, classes).float() * 5 - 1


def official_balanced_accuracy(target: np.ndarray, pred: np.ndarray, classes: int) -> float:
    """The SoccerNet MVFoul evaluator: mean over classes of correct / ground-truth count."""
    gt = np.zeros(classes)
    correct = np.zeros(classes)
    for t, p in zip(target, pred, strict=True):
        gt[t] += 1
        correct[t] += t == p
    return float(np.mean(correct / gt))


def test_known_values_and_leaderboard():
    m = VideoMetrics()
    action_t = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 7])
    action_p = torch.tensor([0, 1, 1, 1, 2, 0, 3, 4, 5, 6, 7, 0])
    offence_t = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3])
    offence_p = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 2, 0, 0, 0])
    m.update(
        {"action": one_hot_logits(action_p, 8), "offence": one_hot_logits(offence_p, 4)},
        {"action": action_t, "offence": offence_t},
    )
    out = m.compute()
    assert out["action/acc"].item() == pytest.approx(9 / 12)
    assert out["action/bal_acc"].item() == pytest.approx((0.5 + 1 + 0.5 + 1 + 1 + 1 + 1 + 0.5) / 8)
    assert out["offence/acc"].item() == pytest.approx(8 / 12)
    assert out["offence/bal_acc"].item() == pytest.approx((0.75 + 1.0 + 0.5 + 0.0) / 4)
    assert out["leaderboard"].item() == pytest.approx(
        (out["action/bal_acc"].item() + out["offence/bal_acc"].item()) / 2
    )
    assert set(out) == {
        "action/acc",
        "action/bal_acc",
        "offence/acc",
        "offence/bal_acc",
        "leaderboard",
    }
    cm = m.confusion("offence")
    assert cm.shape == (4, 4)
    assert cm[3].tolist() == [2, 0, 0, 0] and cm[0].tolist() == [3, 1, 0, 0]


def test_matches_the_official_evaluator_when_every_class_is_present():
    g = torch.Generator().manual_seed(0)
    m = VideoMetrics()
    targets, preds = {"action": [], "offence": []}, {"action": [], "offence": []}
    for _ in range(3):  # several batches accumulate
        batch = {
            "action": torch.cat([torch.arange(8), torch.randint(0, 8, (20,), generator=g)]),
            "offence": torch.cat([torch.arange(4), torch.randint(0, 4, (24,), generator=g)]),
        }
        pred = {
            "action": torch.randn(28, 8, generator=g),
            "offence": torch.randn(28, 4, generator=g),
        }
        m.update(pred, batch)
        for task in ("action", "offence"):
            targets[task].append(batch[task])
            preds[task].append(pred[task].argmax(-1))
    out = m.compute()
    for task, classes in (("action", 8), ("offence", 4)):
        t, p = torch.cat(targets[task]).numpy(), torch.cat(preds[task]).numpy()
        assert out[f"{task}/bal_acc"].item() == pytest.approx(
            official_balanced_accuracy(t, p, classes)
        )
        assert out[f"{task}/acc"].item() == pytest.approx(float((t == p).mean()))


def test_classes_absent_from_targets_are_ignored_like_sklearn():
    # class 3 is predicted but never a target: sklearn's balanced_accuracy_score averages recall
    # over the classes present in y_true -> (1/2 + 2/2 + 1/2) / 3
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 3, 1, 1, 2, 0])
    m = VideoMetrics(num_actions=4, num_offence=4)
    m.update({"action": pred, "offence": pred}, {"action": target, "offence": target})
    assert m.compute()["offence/bal_acc"].item() == pytest.approx(2 / 3)
    assert balanced_accuracy(torch.zeros(3, 3)).isnan()


def test_reset_and_errors():
    m = VideoMetrics()
    t = {"action": torch.tensor([1, 2]), "offence": torch.tensor([0, 1])}
    m.update({"action": torch.tensor([1, 2]), "offence": torch.tensor([0, 1])}, t)
    assert m.compute()["leaderboard"].item() == pytest.approx(1.0)
    m.reset()
    m.update({"action": torch.tensor([0, 0]), "offence": torch.tensor([1, 0])}, t)
    assert m.compute()["action/acc"].item() == 0.0
    with pytest.raises(KeyError, match="'offence' in both preds and batch"):
        m.update({"action": torch.tensor([0])}, t)
    assert m.confusion("action").sum().item() == 2  # the failed call updated nothing
    with pytest.raises(KeyError, match="unknown task 'severity'"):
        m.confusion("severity")


def test_plot_confusion_writes_a_png(tmp_path):
    cm = torch.tensor([[5, 1, 0, 0], [2, 3, 1, 0], [0, 1, 4, 1], [0, 0, 2, 2]])
    path = plot_confusion(cm, OFFENCE_CLASSES, tmp_path / "plots" / "offence.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match=r"\(4, 4\) does not fit 8 class names"):
        plot_confusion(cm, ACTION_CLASSES, tmp_path / "bad.png")


def test_balanced_accuracy_equals_sklearn_with_missing_classes():
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(5)
    for _ in range(20):
        target = torch.randint(0, 6, (30,), generator=g)  # classes 6, 7 never targets
        pred = torch.randint(0, 8, (30,), generator=g)
        m = VideoMetrics()
        m.update({"action": pred, "offence": pred % 4}, {"action": target, "offence": target % 4})
        expected = metrics.balanced_accuracy_score(target.numpy(), pred.numpy())
        assert m.compute()["action/bal_acc"].item() == pytest.approx(expected)
