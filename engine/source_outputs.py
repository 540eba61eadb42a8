"""Where the loop gets each source's logits for a batch.

Each source has a provider, a callable batch -> logits [B, C]:
- `LiveSource` runs the frozen network on the batch's images (`cache: off`);
- `engine.source_cache.CachedSource` looks the outputs up by (sample index, view id).
`SourceOutputs` asks every provider, so the loop and the method cannot tell them apart.
"""
from __future__ import annotations

from typing import Callable

import torch

Provider = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class LiveSource:
    def __init__(self, source, autocast):
        self.source, self.autocast = source, autocast
        self.calls = 0  # forward passes run, so tests can prove that a cache made them unnecessary
        self.origin = "live"  # provenance, as CachedSource.origin ("reused" / "built")

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.calls += 1
        with self.autocast():
            return self.source(batch["image"]).float()


class SourceOutputs:
    def __init__(self, providers: dict[str, Provider]):
        self.providers = providers

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: provider(batch) for name, provider in self.providers.items()}
