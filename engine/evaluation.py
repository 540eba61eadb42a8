"""Evaluation, for images and clips and for one or several deployed networks, in one place.

`build_evaluator(cfg, split, accelerator)` -> `evaluate(network, prefix) -> {prefix + name: value}`: the
evaluation training runs every `train.eval_every` epochs and engine.evaluate runs on a saved checkpoint.

Images (original view of every image):
  top1, top5                 single-label, in percent (torchmetrics, synchronised across processes)
  mAP, sample_ap             multi-label (VOC): class-wise mean AP, and the sample-averaged AP (AP over the
                             classes of each image, averaged over images) that the SSKT paper reported
  loss, images               the target's loss and the number of images scored

Clips (test videos, the 3D-ResNets-PyTorch protocol):
  clip_top1, clip_top5, loss every consecutive non-overlapping centre-crop clip of every test video, each
                             scored on its own
  video_top1, video_top5     per video, the softmax averaged over those clips (the reference's `--test`)
  video_top1_by_name         the same predictions scored as the reference's test.py scores them: right when
                             the predicted class's name occurs in the video's name (class_named)
  val_clip_top1, val_loss    the reference's validation (its val.log): about `data.val_clips` clips per video,
                             clip accuracy; val_loss is the target's cross-entropy there
  val_total_loss             with `train.val_total_loss`: the method's whole training loss on those clips
                             (SSKT: task loss + alpha * the heads' auxiliary terms against the sources' outputs
                             on each clip's middle frame), the loss the reference's ReduceLROnPlateau read
  clips, videos, val_clips   how many were scored

Integer values are counts, floats are scores: `evaluate_networks` averages the scores of several deployed
networks (DML's peers) and never the counts.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MultilabelAveragePrecision
from torchmetrics.utilities import dim_zero_cat

from engine.data import views
from pipelines.datasets import is_video
from pipelines.loaders import build_clip_loader, build_loader
from pipelines.plan import ClipPlan, eval_plan
from pipelines.views import EVAL_VIEWS

Evaluator = Callable[[torch.nn.Module, str], dict]  # (network, prefix) -> {prefix + name: value}
BatchLoss = Callable[[object, dict], torch.Tensor]  # (a network's output, batch) -> the batch's mean loss


def build_evaluator(cfg, split, accelerator, total_loss: BatchLoss | None = None) -> Evaluator:
    """The evaluator of one split (test, or val held out of the training images); `total_loss` (clips only):
    the method's training loss, scored on the validation clips as `val_total_loss`."""
    if is_video(split):
        return build_clip_evaluator(cfg, split, accelerator, total_loss)
    return build_image_evaluator(cfg, split, accelerator)


def primary_metric(split) -> str:
    """The metric a run reports and selects `best` by: video accuracy for clips, the paper's sample AP for
    multi-label images (class-wise mAP is logged beside it), top-1 otherwise."""
    if is_video(split):
        return "video_top1"
    return "sample_ap" if split.multilabel else "top1"


def logits_of(output) -> torch.Tensor:
    """A network's float logits, whether it returns a models.network.ModelOutput or plain logits."""
    return (output.logits if hasattr(output, "logits") else output).float()


def evaluate_networks(networks: dict, evaluate: Evaluator, split: str = "test") -> dict[str, float]:
    """Every deployed network on one split. With several (DML peers), each under its name, their mean under
    `<split>/mean/`, and the first (the reported one) also as plain `<split>/<metric>`."""
    if len(networks) == 1:
        (deployed,) = networks.values()
        return evaluate(deployed.network, f"{split}/")
    record = {}
    for name, deployed in networks.items():
        record.update(evaluate(deployed.network, f"{split}/{name}/"))
    first = next(iter(networks))
    for key in [k.removeprefix(f"{split}/{first}/") for k in record if k.startswith(f"{split}/{first}/")]:
        value = record[f"{split}/{key}"] = record[f"{split}/{first}/{key}"]
        if not isinstance(value, int):  # a count is the same for every network: no mean
            record[f"{split}/mean/{key}"] = sum(record[f"{split}/{n}/{key}"] for n in networks) / len(networks)
    return record


# ---------------------------------------------------------------- images

def build_image_evaluator(cfg, images, accelerator) -> Evaluator:
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    loader = build_loader(cfg.data.loader, images, EVAL_VIEWS, device=device, workers=cfg.data.workers,
                          plan=lambda epoch: eval_plan(len(images), cfg.data.eval_batch_size, rank, world))
    metrics = build_eval_metrics(images.num_classes, images.multilabel).to(device)
    return lambda network, prefix: evaluate_images(accelerator, network, loader, metrics, prefix)


@torch.no_grad()
def evaluate_images(accelerator, network, loader, metrics, prefix: str = "test/") -> dict[str, float]:
    """Metrics of one network (images in [0, 1] -> ModelOutput or logits) over the loader's images."""
    network.eval()
    metrics.reset()
    totals = torch.zeros(2, device=accelerator.device)  # images, summed task loss (the plateau schedule's)
    for batch in loader.epoch(0):
        with accelerator.autocast():
            logits = logits_of(network(batch["image"]))
        target = batch["label"]
        if target.ndim == 2:  # multi-hot
            metrics.update(torch.sigmoid(logits), target.long())
            loss = F.binary_cross_entropy_with_logits(logits, target.float()) * target.shape[0]
        else:
            metrics.update(logits, target)
            loss = F.cross_entropy(logits, target, reduction="sum")
        totals += torch.stack([torch.tensor(float(target.shape[0]), device=totals.device), loss])
    values = {f"{prefix}{k}": round(100.0 * float(v), 4) for k, v in metrics.compute().items()}
    totals = accelerator.reduce(totals, reduction="sum")
    values[f"{prefix}images"] = int(totals[0])
    values[f"{prefix}loss"] = float(totals[1] / totals[0])
    return values


class SampleAveragedPrecision(Metric):
    """sklearn's average_precision_score per image, averaged over images (sample_average_precision)."""
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
    """The mean over images of sklearn's average_precision_score(targets[i], scores[i]), as the reference
    scores VOC: each positive adds its recall step times the precision at its score's threshold, so tied
    scores count as one threshold (their precision is taken after the whole tie); an image without a
    positive scores 0 (sklearn: recall one at every threshold, precision zero)."""
    ranked, order = scores.sort(dim=1, descending=True)
    hits = targets.gather(1, order)  # [N, C] 1 where the k-th ranked class is positive
    columns = torch.arange(hits.shape[1], device=hits.device).expand_as(hits)
    tie_ends = torch.ones_like(hits, dtype=torch.bool)
    tie_ends[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    # each rank's threshold closes at the last rank of its tie: the first tie end at or after it
    closes_at = torch.where(tie_ends, columns, hits.shape[1]).flip(1).cummin(1).values.flip(1)
    precision_at_threshold = hits.cumsum(1).gather(1, closes_at) / (closes_at + 1)
    positives = hits.sum(1)
    return ((precision_at_threshold * hits).sum(1) / positives.clamp(min=1)).mean()


def build_eval_metrics(num_classes: int, multilabel: bool) -> MetricCollection:
    if multilabel:
        return MetricCollection({"mAP": MultilabelAveragePrecision(num_labels=num_classes, average="macro"),
                                 "sample_ap": SampleAveragedPrecision()})
    metrics = {"top1": MulticlassAccuracy(num_classes=num_classes, average="micro")}
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


# ---------------------------------------------------------------- clips

def build_clip_evaluator(cfg, videos, accelerator, total_loss: BatchLoss | None = None) -> Evaluator:
    """Clip and video accuracy over every clip of the split's videos, and the reference's validation clips
    (data.val_clips per video) beside them, with `total_loss` scored there too when given."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    data = cfg.data
    centre_crop = views(cfg, videos, train=False)

    def clip_loader(clips_per_video: int):
        plan = ClipPlan(tuple(videos.frame_counts.tolist()), data.clip_length, data.eval_batch_size, train=False,
                        rank=rank, world=world, eval_clips=clips_per_video)
        return build_clip_loader(data.loader, videos, centre_crop, plan, device, data.workers)

    test_loader = clip_loader(0)
    val_loader = clip_loader(data.val_clips) if data.val_clips else None
    labels = torch.as_tensor(videos.labels, device=device)
    named = class_named(videos.video_names(), videos.class_names).to(device)

    def evaluate(network, prefix: str) -> dict[str, float]:
        record = evaluate_clips(accelerator, network, test_loader, labels, videos.num_classes, prefix,
                                name_matches=named)
        if val_loader is not None:
            val = evaluate_clips(accelerator, network, val_loader, labels, videos.num_classes, prefix, total_loss)
            for name in ("clip_top1", "loss", "total_loss", "clips"):
                if f"{prefix}{name}" in val:
                    record[f"{prefix}val_{name}"] = val[f"{prefix}{name}"]
        return record

    return evaluate


def class_named(video_names: list[str], class_names: list[str]) -> torch.Tensor:
    """bool [videos, classes]: the class's name occurs in the video's own name (case-insensitive; the part
    after the last `/`, without the class folder): the SSKT reference's test.py counts a video as right when
    its predicted class is named there, so on UCF-101 a Punch prediction is right on v_BoxingPunchingBag_*."""
    own = [name.rsplit("/", 1)[-1].lower() for name in video_names]
    return torch.tensor([[c.lower() in name for c in class_names] for name in own],
                        dtype=torch.bool).reshape(len(own), len(class_names))


@torch.no_grad()
def evaluate_clips(accelerator, network, loader, video_labels: torch.Tensor, num_classes: int,
                   prefix: str = "test/", total_loss: BatchLoss | None = None,
                   name_matches: torch.Tensor | None = None) -> dict[str, float]:
    """Clip accuracy and loss (and `total_loss`, when given) over the loader's clips, and video accuracy from
    the mean softmax of each video's clips (and, given `name_matches` [videos, classes] from class_named, the
    reference's test.py accuracy, by name); every process scores its share of the clips (maybe none), the sums
    are reduced."""
    device = accelerator.device
    totals = torch.zeros(5, device=device)  # clips, correct top-1, correct top-5, summed loss, summed total loss

    def count(batch, logits, output):
        label = batch["label"]
        n = torch.tensor(float(len(label)), device=device)
        total = total_loss(output, batch).float() * n if total_loss is not None else torch.zeros((), device=device)
        totals.add_(torch.stack([n, (logits.argmax(1) == label).sum().float(), top5_hits(logits, label).sum().float(),
                                 F.cross_entropy(logits, label, reduction="sum"), total]))

    scores, clips = score_videos(network, loader, len(video_labels), num_classes, device, accelerator.autocast, count)
    totals = accelerator.reduce(totals, reduction="sum")
    scores, clips = accelerator.reduce(scores, reduction="sum"), accelerator.reduce(clips, reduction="sum")
    seen = clips > 0
    video_hits = (scores.argmax(1) == video_labels)[seen].float()
    video_hits5 = top5_hits(scores, video_labels)[seen].float()
    n = float(totals[0])
    record = {"clip_top1": 100 * float(totals[1]) / n, "video_top1": 100 * float(video_hits.mean())}
    if name_matches is not None:
        by_name = name_matches[torch.arange(len(scores), device=scores.device), scores.argmax(1)]
        record["video_top1_by_name"] = 100 * float(by_name[seen].float().mean())
    if scores.shape[1] > 5:
        record.update(clip_top5=100 * float(totals[2]) / n, video_top5=100 * float(video_hits5.mean()))
    record = {f"{prefix}{k}": round(v, 4) for k, v in record.items()}
    record.update({f"{prefix}loss": float(totals[3]) / n, f"{prefix}clips": int(n), f"{prefix}videos": int(seen.sum())})
    if total_loss is not None:
        record[f"{prefix}total_loss"] = float(totals[4]) / n
    return record


@torch.no_grad()
def score_videos(network, loader, num_videos: int, num_classes: int, device, autocast=contextlib.nullcontext,
                 each_batch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed softmax [videos, classes], clips [videos]) over the loader's clips, which carry their
    `video`; the mean softmax is a video's score (test/video_top1, engine.predict on video files).
    `each_batch(batch, logits, output)` sees every batch's float logits and the network's whole output."""
    network.eval()
    scores = torch.zeros(num_videos, num_classes, device=device)
    clips = torch.zeros(num_videos, device=device)
    for batch in loader.epoch(0):
        with autocast():
            output = network(batch["image"])
        logits = logits_of(output)
        if each_batch is not None:
            each_batch(batch, logits, output)
        scores.index_add_(0, batch["video"], logits.softmax(1))
        clips.index_add_(0, batch["video"], torch.ones(len(logits), device=device))
    return scores, clips


def top5_hits(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """bool [N]: the label is among the 5 highest scores (all of them when there are fewer classes)."""
    top = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return (top == label[:, None]).any(1)
