"""What a config's data section makes, for images and clips alike: views, the training loader, the input size.

    views(cfg, split, train)        pipelines.views.ViewSet (images: pad-p crops x flips; evaluation: the
                                    original) or ClipViewSet (clips: multi-scale corner crops x flips;
                                    evaluation: the centre crop)
    train_loader(cfg, split, ...)   batches {image, label, index, view (+ start, video for clips)} per epoch,
                                    in the order the plan (pipelines.plan) deals them to this process
    input_size(cfg, split)          what an exported network expects: [H, W] images or [T, H, W] clips

Images [B, 3, H, W] and clips [B, 3, T, H, W] then pass through the same loop, methods and source providers:
"a clip batch is a batch". Training on clips follows 3D-ResNets-PyTorch: each epoch every training video
once, as one clip of `data.clip_length` frames from a random start, in a random clip view.
"""
from __future__ import annotations

from engine.schema import ConfigError
from pipelines.datasets import is_video
from pipelines.loaders import build_clip_loader, build_loader
from pipelines.plan import ClipPlan, train_plan
from pipelines.views import EVAL_VIEWS, ClipViewSet, ViewSet


def views(cfg, split, train: bool = True) -> ViewSet | ClipViewSet:
    """The view set the loaders (and the source caches) turn view ids into pixels with."""
    data = cfg.data
    try:
        if is_video(split):
            return ClipViewSet(count=data.views if train else 1, size=data.sample_size)
        return ViewSet(pad=data.pad, count=data.views) if train else EVAL_VIEWS
    except ValueError as e:
        raise ConfigError(f"data.views: {e}") from None


def train_loader(cfg, split, view_set, accelerator, centre_stride: int = 1):
    """The training batches of this process. `centre_stride` k (clips): starts only where the clip's middle
    frame is a multiple of k, the frames a per-frame source cache holds."""
    data, rank, world = cfg.data, accelerator.process_index, accelerator.num_processes
    if is_video(split):
        plan = ClipPlan(tuple(split.frame_counts.tolist()), data.clip_length, data.batch_size, train=True,
                        view_count=view_set.count, seed=cfg.seed, rank=rank, world=world, centre_stride=centre_stride,
                        drop_last=data.drop_last)
        return build_clip_loader(data.loader, split, view_set, plan, accelerator.device, data.workers)
    return build_loader(data.loader, split, view_set, device=accelerator.device, workers=data.workers,
                        plan=lambda epoch: train_plan(len(split), view_set, data.batch_size, cfg.seed, epoch,
                                                      rank, world, data.drop_last))


def input_size(cfg, split) -> list[int]:
    if is_video(split):
        return [cfg.data.clip_length, cfg.data.sample_size, cfg.data.sample_size]
    return list(split.image_size)
