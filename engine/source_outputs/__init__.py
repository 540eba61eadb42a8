"""Where the loop gets each frozen source's logits for a batch: one provider per source, batch -> [B, C].

    LiveSource            runs the frozen network on the batch's images (`cache: off`), or on each clip's
                          middle frame (a 2D source scores one frame, after the clip's crop and flip, as the
                          SSKT reference's 3D code did)
    image_cache.CachedSource        looks the outputs up by (sample index, view) in the HDF5 cache
    frame_cache.CachedFrameSource   looks them up by (video, view, clip start) in the per-frame cache

`build_source_outputs` opens them (building a missing or stale cache first); `SourceOutputs` asks every
provider, so the loop and the method cannot tell them apart.
"""
from __future__ import annotations

from typing import Callable

import torch

from engine.source_outputs.frame_cache import open_frame_cache
from engine.source_outputs.image_cache import open_cached_source
from pipelines.datasets import is_video

Provider = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def middle_frame(clips: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C, H, W]: frame T // 2 (the reference's `inputs[:, :, T // 2]`)."""
    return clips[:, :, clips.shape[2] // 2]


class LiveSource:
    def __init__(self, source, autocast, inputs: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.source, self.autocast, self.inputs = source, autocast, inputs
        self.calls = 0  # forward passes run, so tests can prove that a cache made them unnecessary
        self.origin = "live"  # provenance, as CachedSource.origin ("reused" / "built")

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        images = batch["image"] if self.inputs is None else self.inputs(batch["image"])
        with self.autocast():
            return self.source(images).float()


class SourceOutputs:
    def __init__(self, providers: dict[str, Provider]):
        self.providers = providers

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: provider(batch) for name, provider in self.providers.items()}


def live_source_outputs(sources, accelerator, video: bool) -> SourceOutputs:
    """Every source run live on the device, on the batch's images or each clip's middle frame."""
    return SourceOutputs({source.name: LiveSource(source.to(accelerator.device), accelerator.autocast,
                                                  inputs=middle_frame if video else None) for source in sources})


def frame_stride(cfg) -> int:
    """Clips: the per-frame caches hold every k-th frame (k = source_cache.frame_stride) when a source is
    cached; training then draws clips whose middle frame is one of them (engine.data.train_loader)."""
    return cfg.source_cache.frame_stride if any(s.cache != "off" for s in cfg.sources) else 1


def build_source_outputs(cfg, sources, train_set, view_set, accelerator) -> SourceOutputs:
    """A provider per source (config order): live (`cache: off`), or its stored outputs on every training
    view, built first where missing or stale (modes auto, required, rebuild)."""
    video = is_video(train_set)
    providers = {}
    for source_cfg, source in zip(cfg.sources, sources):
        if source_cfg.cache == "off":
            providers.update(live_source_outputs([source], accelerator, video).providers)
            continue
        if video:
            providers[source.name] = open_frame_cache(source, train_set, view_set, cfg.data.clip_length,
                                                      cfg.source_cache, source_cfg.cache, accelerator,
                                                      progress=cfg.train.progress)
        else:
            providers[source.name] = open_cached_source(source, train_set, view_set, cfg.source_cache,
                                                        source_cfg.cache, accelerator, progress=cfg.train.progress)
        source.to("cpu")  # not needed on the device any more: its outputs are stored
    return SourceOutputs(providers)
