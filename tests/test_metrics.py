"""Evaluation metrics against hand computations."""
import pytest
import torch

from engine.evaluation import build_eval_metrics, sample_average_precision


def test_sample_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.6], [0.5, 0.4, 0.3, 0.2]])
    targets = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    # image 0: ranking 0(+) 2 3(+) 1 -> precisions at the positives 1/1 and 2/3 -> AP 5/6
    # image 1: ranking 1(+) -> AP 1; image 2 has no positive and is skipped
    assert sample_average_precision(scores, targets).item() == pytest.approx((5 / 6 + 1) / 2)


def test_multilabel_metrics_report_map_and_sample_ap():
    metrics = build_eval_metrics(4, multilabel=True)
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.6]])
    targets = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]])
    metrics.update(scores, targets)
    values = metrics.compute()
    # class-wise AP: c0 1, c1 1, c2 ranking (0.8+, 0.1+) -> 1, c3 ranking (0.6-, 0.3+) -> 1/2
    assert values["mAP"].item() == pytest.approx((1 + 1 + 1 + 0.5) / 4)
    assert set(values) == {"mAP", "sample_ap"}


def test_single_label_metrics():
    metrics = build_eval_metrics(10, multilabel=False)
    logits = torch.eye(10)[[0, 1, 2, 3]] - torch.arange(10) * 0.01  # no ties
    logits[2, 5] = 0.5  # sample 2: true class 5 ranked second
    metrics.update(logits, torch.tensor([0, 1, 5, 3]))
    values = metrics.compute()
    assert values["top1"].item() == pytest.approx(0.75) and values["top5"].item() == pytest.approx(1.0)
