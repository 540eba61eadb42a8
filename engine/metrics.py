"""Evaluation metrics (torchmetrics, synchronised across processes by torchmetrics itself).

Single-label: top-1 (and top-5) accuracy in percent.
Multi-label (VOC): class-wise mean AP ("mAP", the usual VOC figure) and the
sample-averaged AP ("sample_ap": AP over the classes of each image, averaged
over images) that the SSKT paper reported.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision
from torchmetrics.utilities import dim_zero_cat


class SampleAveragedPrecision(Metric):
    """sklearn's average_precision_score(average="samples"); images without a positive are skipped."""
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, scores: torch.Tensor, targets: torch.Tensor):
        self.scores.append(scores.float())
        self.targets.append(targets.float())

    def compute(self):
        return sample_average_precision(dim_zero_cat(self.scores), dim_zero_cat(self.targets))


def sample_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    order = scores.argsort(dim=1, descending=True)
    hits = targets.gather(1, order)  # [N, C] 1 where the k-th ranked class is positive
    precision_at_k = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, device=hits.device)
    positives = hits.sum(1)
    keep = positives > 0
    ap = (precision_at_k * hits).sum(1)[keep] / positives[keep]
    return ap.mean()


def build_eval_metrics(num_classes: int, multilabel: bool) -> MetricCollection:
    if multilabel:
        return MetricCollection({"mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro"),
                                 "sample_ap": SampleAveragedPrecision()})
    metrics = {"top1": MulticlassAccuracy(num_classes=num_classes, average="micro")}
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


def primary_metric(multilabel: bool) -> str:
    return "sample_ap" if multilabel else "top1"  # the paper's VOC figure; class-wise mAP is logged beside it


def as_percent(values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: round(100.0 * float(v), 4) for name, v in values.items()}
