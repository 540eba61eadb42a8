"""Where the loop gets each source's logits for a batch.

Each source has a provider, a callable batch -> logits [B, C]:
- `LiveSource` runs the frozen network on the batch's images (`cache: off`), or on each clip's
  middle frame for video (`inputs=middle_frame`: a 2D source scores one frame, after the clip's
  crop and flip, as the SSKT reference's 3D code did);
- `engine.source_outputs.image_cache.CachedSource` looks the outputs up by (sample index, view id), and
  `engine.source_outputs.frame_cache.CachedFrameSource` by (video, view, clip start) for video.
`SourceOutputs` asks every provider, so the loop and the method cannot tell them apart.
"""
from __future__ import annotations

from typing import Callable

import torch

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


def source_configs(cfg) -> list:
    """The sources' configs as loaded: `input: reference` sources see the target's own input, at its
    size (resize scale 1) with the data's mean/std, whatever their own preprocessing (the SSKT
    reference's 3D code fed 112x112 clip frames normalised the clip's way to ImageNet networks)."""
    out = []
    for source in cfg.sources:
        if source.input == "reference":
            source = source.model_copy(update={"resize": {"scale": 1.0}, "mean": tuple(cfg.data.mean),
                                               "std": tuple(cfg.data.std)})
        out.append(source)
    return out


class SourceOutputs:
    def __init__(self, providers: dict[str, Provider]):
        self.providers = providers

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: provider(batch) for name, provider in self.providers.items()}
