"""What training reads, for images or clips alike: `build_data(cfg, splits, sources, accelerator)`.

    data.train_loader      batches {image, label, index, view (+ start, video for clips)} per epoch
    data.source_outputs    batch -> {source name: logits}, live or cached (engine.source_outputs)
    data.evaluators        {split: (network, prefix) -> {prefix + metric: value}}: test, and val when
                           data.val_fraction holds part of the training set out (images only);
                           `build_evaluator(cfg, split, accelerator)` makes one (engine.evaluate too)
    data.metric            the metric the run reports and selects `best` by
    data.input_size        what an exported network expects: [H, W] images or [T, H, W] clips

The loop and the methods see only these, so "a clip batch is a batch": images [B, 3, H, W] and
clips [B, 3, T, H, W] pass through the same loop, methods and sources' providers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.loop import evaluate
from engine.metrics import build_eval_metrics, primary_metric
from engine.source_outputs.image_cache import open_cached_source
from engine.source_outputs import LiveSource, SourceOutputs
from pipelines.datasets import is_video
from pipelines.loaders import Loader, build_loader
from pipelines.plan import eval_plan, train_plan
from pipelines.views import EVAL_VIEWS, ViewSet


@dataclass
class Data:
    train_loader: Loader
    source_outputs: SourceOutputs
    evaluators: dict[str, Callable]  # split -> ((network, prefix) -> dict)
    metric: str
    input_size: list
    describe: str  # views and sizes, for the run's first line


def build_data(cfg, splits: dict, sources, accelerator) -> Data:
    """`splits`: {"train", "test"[, "val"]} as pipelines.datasets.build_split reads them."""
    if is_video(splits["train"]):
        from engine.video import build_video_data
        return build_video_data(cfg, splits, sources, accelerator)
    return build_image_data(cfg, splits, sources, accelerator)


def build_evaluator(cfg, split, accelerator) -> Callable:
    """`(network, prefix) -> {prefix + metric: value}` on one split: the evaluation training runs every
    `train.eval_every` epochs and engine.evaluate runs on a saved checkpoint (one code path)."""
    if is_video(split):
        from engine.video import build_video_evaluator
        return build_video_evaluator(cfg, split, accelerator)
    return build_image_evaluator(cfg, split, accelerator)


def build_image_data(cfg, splits: dict, sources, accelerator) -> Data:
    train_set, test_set = splits["train"], splits["test"]
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    view_set = ViewSet(pad=cfg.data.pad, count=cfg.data.views)
    train_loader = build_loader(
        cfg.data.loader, train_set, view_set, device=device, workers=cfg.data.workers,
        plan=lambda epoch: train_plan(len(train_set), view_set, cfg.data.batch_size, cfg.seed, epoch, rank, world))

    providers = {}
    for source_cfg, source in zip(cfg.sources, sources):
        if source_cfg.cache == "off":
            providers[source.name] = LiveSource(source.to(device), accelerator.autocast)
        else:  # reuse the stored outputs of every view, building them first where needed
            providers[source.name] = open_cached_source(source, train_set, view_set, cfg.source_cache,
                                                        source_cfg.cache, accelerator, progress=cfg.train.progress)
            source.to("cpu")  # not needed on the device any more: its outputs are stored
    evaluators = {name: build_image_evaluator(cfg, images, accelerator) for name, images in splits.items()
                  if name != "train"}
    return Data(train_loader, SourceOutputs(providers), evaluators, primary_metric(test_set.multilabel),
                list(train_set.image_size), view_set.describe())


def build_image_evaluator(cfg, images, accelerator) -> Callable:
    """Top-1/top-5 (mAP and sample AP for multi-label data) on the original view of every image."""
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    loader = build_loader(cfg.data.loader, images, EVAL_VIEWS, device=device, workers=cfg.data.workers,
                          plan=lambda epoch: eval_plan(len(images), cfg.data.eval_batch_size, rank, world))
    metrics = build_eval_metrics(images.num_classes, images.multilabel).to(device)
    return lambda network, prefix: evaluate(accelerator, network, loader, metrics, prefix)
