"""What training reads, for images or clips alike: `build_data(cfg, train_set, test_set, sources, accelerator)`.

    data.train_loader      batches {image, label, index, view (+ start, video for clips)} per epoch
    data.source_outputs    batch -> {source name: logits}, live or cached (engine.source_outputs)
    data.evaluate          (network, prefix) -> {prefix + metric: value}, on the test split
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
from engine.source_cache import open_cached_source
from engine.source_outputs import LiveSource, SourceOutputs
from pipelines.datasets import is_video
from pipelines.loaders import Loader, build_loader
from pipelines.plan import eval_plan, train_plan
from pipelines.views import EVAL_VIEWS, ViewSet


@dataclass
class Data:
    train_loader: Loader
    source_outputs: SourceOutputs
    evaluate: Callable  # (network, prefix) -> dict
    metric: str
    input_size: list
    describe: str  # views and sizes, for the run's first line


def build_data(cfg, train_set, test_set, sources, accelerator) -> Data:
    if is_video(train_set):
        from engine.video import build_video_data
        return build_video_data(cfg, train_set, test_set, sources, accelerator)
    return build_image_data(cfg, train_set, test_set, sources, accelerator)


def build_image_data(cfg, train_set, test_set, sources, accelerator) -> Data:
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    view_set = ViewSet(pad=cfg.data.pad, count=cfg.data.views)
    train_loader = build_loader(
        cfg.data.loader, train_set, view_set, device=device, workers=cfg.data.workers,
        plan=lambda epoch: train_plan(len(train_set), view_set, cfg.data.batch_size, cfg.seed, epoch, rank, world))
    test_loader = build_loader(
        cfg.data.loader, test_set, EVAL_VIEWS, device=device, workers=cfg.data.workers,
        plan=lambda epoch: eval_plan(len(test_set), cfg.data.eval_batch_size, rank, world))
    metrics = build_eval_metrics(test_set.num_classes, test_set.multilabel).to(device)

    providers = {}
    for source_cfg, source in zip(cfg.sources, sources):
        if source_cfg.cache == "off":
            providers[source.name] = LiveSource(source.to(device), accelerator.autocast)
        else:  # reuse the stored outputs of every view, building them first where needed
            providers[source.name] = open_cached_source(source, train_set, view_set, cfg.source_cache,
                                                        source_cfg.cache, accelerator, progress=cfg.train.progress)
            source.to("cpu")  # not needed on the device any more: its outputs are stored
    return Data(train_loader, SourceOutputs(providers),
                lambda network, prefix: evaluate(accelerator, network, test_loader, metrics, prefix),
                primary_metric(test_set.multilabel), list(train_set.image_size), view_set.describe())
