"""Video in the engine: clip loaders, sources on clips, clip and video accuracy.

Training (3D-ResNets-PyTorch): each epoch every training video once, as one clip of
`data.clip_length` frames from a random start, in a random clip view (multi-scale corner crop x
flip, `data.views` of them) at `data.sample_size`.

Sources are 2D: each scores the clip's middle frame after the clip's crop and flip, live
(`cache: off`) or looked up in a per-frame cache (engine.source_outputs.frame_cache, every
`source_cache.frame_stride`-th frame; training then draws starts whose middle frame is cached).

Evaluation on the test split (build_video_evaluator: training's, and engine.evaluate's on a saved
checkpoint), all in the epoch's record and summary.json:
  test/clip_top1, test/clip_top5, test/loss   every consecutive non-overlapping centre-crop clip
                                               of every test video, each scored on its own
  test/video_top1, test/video_top5             per video, the softmax averaged over those clips
                                               (the reference's `--test`: the figure papers report)
  test/val_clip_top1, test/val_loss            the reference's validation (its val.log): about
                                               `data.val_clips` clips per video, clip accuracy;
                                               val_loss is the target's cross-entropy there (the
                                               reference's also added the auxiliary terms)
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from engine.data import Data
from engine.source_outputs.frame_cache import open_frame_cache
from engine.source_outputs import LiveSource, SourceOutputs, middle_frame
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from pipelines.views import ClipViewSet


def clip_view_sets(cfg) -> tuple[ClipViewSet, ClipViewSet]:
    """(training views, the evaluation view: centre crop) at data.sample_size (the data section's schema
    checked data.views against ClipViewSet)."""
    return ClipViewSet(count=cfg.data.views, size=cfg.data.sample_size), ClipViewSet(count=1, size=cfg.data.sample_size)


def build_video_data(cfg, splits: dict, sources, accelerator) -> Data:
    train_set = splits["train"]
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    data = cfg.data
    train_views, _ = clip_view_sets(cfg)
    cached = [s.cache != "off" for s in cfg.sources]
    stride = cfg.source_cache.frame_stride if any(cached) else 1
    train_plan = ClipPlan(tuple(train_set.frame_counts.tolist()), data.clip_length, data.batch_size, train=True,
                          view_count=train_views.count, seed=cfg.seed, rank=rank, world=world, centre_stride=stride)
    train_loader = build_clip_loader(data.loader, train_set, train_views, train_plan, device, data.workers)
    evaluate = build_video_evaluator(cfg, splits["test"], accelerator)

    providers = {}
    for source_cfg, source in zip(cfg.sources, sources):
        if source_cfg.cache == "off":
            providers[source.name] = LiveSource(source.to(device), accelerator.autocast, inputs=middle_frame)
        else:
            providers[source.name] = open_frame_cache(source, train_set, train_views, data.clip_length,
                                                      cfg.source_cache, source_cfg.cache, accelerator,
                                                      progress=cfg.train.progress)
            source.to("cpu")

    describe = (f"{train_views.describe()}, {data.clip_length}-frame clips"
                + (f", sources cached every {stride}. frame" if any(cached) else ""))
    return Data(train_loader, SourceOutputs(providers), {"test": evaluate}, "video_top1",
                [data.clip_length, data.sample_size, data.sample_size], describe)


def build_video_evaluator(cfg, test_set, accelerator):
    """`(network, prefix) -> record` on the test videos: clip and video accuracy over every clip, and
    the reference's validation clips (data.val_clips) beside them."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    data = cfg.data
    _, eval_views = clip_view_sets(cfg)

    def eval_loader(clips_per_video: int):
        plan = ClipPlan(tuple(test_set.frame_counts.tolist()), data.clip_length, data.eval_batch_size, train=False,
                        rank=rank, world=world, eval_clips=clips_per_video)
        return build_clip_loader(data.loader, test_set, eval_views, plan, device, data.workers)

    test_loader = eval_loader(0)
    val_loader = eval_loader(data.val_clips) if data.val_clips else None
    labels = torch.as_tensor(test_set.labels, device=device)

    def evaluate(network, prefix: str) -> dict[str, float]:
        record = evaluate_clips(accelerator, network, test_loader, labels, test_set.num_classes, prefix)
        if val_loader is not None:
            val = evaluate_clips(accelerator, network, val_loader, labels, test_set.num_classes, prefix)
            record.update({f"{prefix}val_clip_top1": val[f"{prefix}clip_top1"], f"{prefix}val_loss": val[f"{prefix}loss"],
                           f"{prefix}val_clips": val[f"{prefix}clips"]})
        return record

    return evaluate


@torch.no_grad()
def evaluate_clips(accelerator, network, loader, video_labels: torch.Tensor, num_classes: int,
                   prefix: str = "test/") -> dict[str, float]:
    """Clip accuracy and loss over the loader's clips, and video accuracy from the mean softmax of each
    video's clips; every process scores its share of the clips (maybe none), the sums are reduced."""
    device = accelerator.device
    totals = torch.zeros(4, device=device)  # clips, correct top-1, correct top-5, summed loss

    def count(batch, logits):
        label = batch["label"]
        totals.add_(torch.stack([torch.tensor(float(len(label)), device=device),
                                 (logits.argmax(1) == label).sum().float(), _top5_hits(logits, label),
                                 F.cross_entropy(logits, label, reduction="sum")]))

    scores, clips = score_videos(network, loader, len(video_labels), num_classes, device, accelerator.autocast, count)
    totals = accelerator.reduce(totals, reduction="sum")
    scores, clips = accelerator.reduce(scores, reduction="sum"), accelerator.reduce(clips, reduction="sum")
    seen = clips > 0
    video_hits = (scores.argmax(1) == video_labels)[seen].float()
    top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
    video_hits5 = (top5 == video_labels[:, None]).any(1)[seen].float()
    n = float(totals[0])
    record = {"clip_top1": 100 * float(totals[1]) / n, "video_top1": 100 * float(video_hits.mean())}
    if scores.shape[1] > 5:
        record.update(clip_top5=100 * float(totals[2]) / n, video_top5=100 * float(video_hits5.mean()))
    record = {f"{prefix}{k}": round(v, 4) for k, v in record.items()}
    record.update({f"{prefix}loss": float(totals[3]) / n, f"{prefix}clips": int(n), f"{prefix}videos": int(seen.sum())})
    return record


@torch.no_grad()
def score_videos(network, loader, num_videos: int, num_classes: int, device, autocast=contextlib.nullcontext,
                 each_batch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed softmax [videos, classes], clips [videos]) over the loader's clips, which carry their
    `video`; the mean softmax is a video's score (test/video_top1, engine.predict on video files).
    `each_batch(batch, logits)` sees every batch's float logits."""
    network.eval()
    scores = torch.zeros(num_videos, num_classes, device=device)
    clips = torch.zeros(num_videos, device=device)
    for batch in loader.epoch(0):
        with autocast():
            output = network(batch["image"])
        logits = (output.logits if hasattr(output, "logits") else output).float()
        if each_batch is not None:
            each_batch(batch, logits)
        scores.index_add_(0, batch["video"], logits.softmax(1))
        clips.index_add_(0, batch["video"], torch.ones(len(logits), device=device))
    return scores, clips


def _top5_hits(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return (top == label[:, None]).any(1).sum().float()
