"""Evaluation metrics against hand computations."""
import numpy as np
import pytest
import torch

from engine.evaluation import build_eval_metrics, sample_average_precision


def test_sample_average_precision_by_hand():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.1, 0.6], [0.5, 0.4, 0.3, 0.2]])
    targets = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
    # image 0: ranking 0(+) 2 3(+) 1 -> precisions at the positives 1/1 and 2/3 -> AP 5/6
    # image 1: ranking 1(+) -> AP 1; image 2 has no positive: AP 0 (sklearn's, as the reference counts it)
    assert sample_average_precision(scores, targets).item() == pytest.approx((5 / 6 + 1 + 0) / 3)


def test_sample_average_precision_counts_a_tie_as_one_threshold():
    # 0.9(-), then a tie at 0.5 of one positive and one negative, then 0.1(+): sklearn's thresholds give
    # precision 1/3 at the tie and 2/4 at 0.1 -> AP 5/12, whichever of the tied classes is the positive
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1]])
    for targets in (torch.tensor([[0, 1, 0, 1]]), torch.tensor([[0, 0, 1, 1]])):
        assert sample_average_precision(scores, targets).item() == pytest.approx(5 / 12)


def _sklearn_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's average_precision_score on one image, written out: precision and recall at each distinct
    score, AP = sum of recall steps x precision (0 when nothing is positive)."""
    order = np.argsort(-y_score, kind="mergesort")
    y_true, y_score = y_true[order], y_score[order]
    thresholds = np.r_[np.flatnonzero(np.diff(y_score)), len(y_true) - 1]
    tps = np.cumsum(y_true)[thresholds]
    if tps[-1] == 0:
        return 0.0
    precision, recall = tps / (thresholds + 1), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def test_sample_average_precision_matches_sklearns_formula_with_coarse_scores():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        scores = (torch.rand(8, 20, generator=generator) * 8).round() / 8  # many ties, as bf16 logits give
        targets = (torch.rand(8, 20, generator=generator) < 0.15).float()
        want = np.mean([_sklearn_average_precision(t, s) for t, s in zip(targets.numpy(), scores.numpy())])
        assert sample_average_precision(scores, targets).item() == pytest.approx(want, abs=1e-6)


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


class _Clips:
    """A clip loader whose 'image' is already the network's logits (the network is the identity)."""

    def __init__(self, batches):
        self.batches = batches

    def epoch(self, epoch):
        return iter(self.batches)


def test_video_accuracy_is_the_mean_softmax_of_a_videos_clips_not_its_clips_hits():
    """Video 0 (class 0): one clip sure of class 0, two clips mildly for class 1, in two batches; video 1
    (class 2): two right clips. The mean softmax gets video 0 right, though only 1 of its 3 clips is right:
    video top-1 100 while clip top-1 is 60; averaging each video's clip hits would give 66.7, a majority
    vote 50."""
    import torch.nn as nn
    from accelerate import Accelerator
    from engine.evaluation import evaluate_clips

    sure, mild = [9.0, 0.0, 0.0], [0.0, 0.5, 0.0]  # softmax ~(1, 0, 0) and (0.27, 0.45, 0.27)
    batches = [{"image": torch.tensor([sure, mild, [0.0, 0.0, 3.0]]), "label": torch.tensor([0, 0, 2]),
                "video": torch.tensor([0, 0, 1])},
               {"image": torch.tensor([mild, [0.0, 0.0, 3.0]]), "label": torch.tensor([0, 2]),
                "video": torch.tensor([0, 1])}]
    record = evaluate_clips(Accelerator(cpu=True), nn.Identity(), _Clips(batches), torch.tensor([0, 2]), 3)
    assert record["test/clips"] == 5 and record["test/videos"] == 2
    assert record["test/clip_top1"] == pytest.approx(60.0)
    assert record["test/video_top1"] == pytest.approx(100.0)


def test_video_accuracy_by_name_scores_as_the_references_test_py():
    """UCF-101's names: a Punch prediction on a BoxingPunchingBag video is wrong by label and right by name
    (test.py: `label.lower() in video_name.lower()`); the class folder in front of the name does not count."""
    import torch.nn as nn
    from accelerate import Accelerator
    from engine.evaluation import class_named, evaluate_clips

    classes = ["BoxingPunchingBag", "Punch", "Rowing"]
    names = ["BoxingPunchingBag/v_BoxingPunchingBag_g01_c01", "Punch/v_Punch_g01_c01", "Rowing/v_Rowing_g01_c01"]
    named = class_named(names, classes)
    assert named.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    punch, rowing = [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]  # every video predicted Punch but the last
    batches = [{"image": torch.tensor([punch, punch, punch]), "label": torch.tensor([0, 1, 2]),
                "video": torch.tensor([0, 1, 2])}]
    record = evaluate_clips(Accelerator(cpu=True), nn.Identity(), _Clips(batches), torch.tensor([0, 1, 2]), 3,
                            name_matches=named)
    assert record["test/video_top1"] == pytest.approx(100 / 3, abs=1e-3)  # only the Punch video
    assert record["test/video_top1_by_name"] == pytest.approx(200 / 3, abs=1e-3)  # and the BoxingPunchingBag one
    batches[0]["image"][2] = torch.tensor(rowing)
    record = evaluate_clips(Accelerator(cpu=True), nn.Identity(), _Clips(batches), torch.tensor([0, 1, 2]), 3,
                            name_matches=named)
    assert record["test/video_top1"] == pytest.approx(200 / 3, abs=1e-3) and record["test/video_top1_by_name"] == 100
