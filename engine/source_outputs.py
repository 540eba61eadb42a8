"""Where the loop gets each source's logits for a batch.

`LiveSourceOutputs` runs the frozen sources on the batch's images every step
(`source.cache: off`). The HDF5 cache provides the same call, looked up by
(sample index, view id), so the loop cannot tell them apart.
"""
from __future__ import annotations

import torch


class LiveSourceOutputs:
    def __init__(self, sources, autocast):
        self.sources, self.autocast = list(sources), autocast
        self.calls = 0  # forward passes run, so tests can prove a cache made them unnecessary

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = {}
        with self.autocast():
            for source in self.sources:
                outputs[source.name] = source(batch["image"]).float()
                self.calls += 1
        return outputs


class NoSourceOutputs:
    def __call__(self, batch):
        return {}
