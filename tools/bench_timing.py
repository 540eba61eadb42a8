"""One epoch of the real training loop, timed: what every training row of the benches measures
(tools/bench.py, tools/bench_video3d.py, tools/gpu_check.py)."""
from __future__ import annotations

import itertools

import torch

from engine.experiment import Experiment
from engine.loop import train_one_epoch
from engine.source_outputs import SourceOutputs


def timed_epoch(experiment: Experiment, outputs: SourceOutputs | None = None) -> dict:
    """The record (engine.loop) of one epoch of the real training loop, after one warm-up batch."""
    torch.manual_seed(0)
    method, loader = experiment.method, experiment.train_loader
    outputs = outputs or experiment.source_outputs
    for epoch in (0, 1):  # epoch 0 warms up (first-touch allocations, cache load)
        record = train_one_epoch(experiment.accelerator, method, outputs, FirstBatches(loader, 1 if epoch == 0 else None),
                                 epoch, 2, False)
    return record


def time_training(experiment: Experiment, outputs: SourceOutputs | None = None) -> float:
    """Images (or clips) per second of `timed_epoch`."""
    return timed_epoch(experiment, outputs)["train/images_per_s"]


class FirstBatches:
    """A loader's epoch cut to its first `count` batches (None: all of them)."""

    def __init__(self, loader, count: int | None):
        self.loader, self.count = loader, count

    def epoch(self, epoch: int):
        return itertools.islice(self.loader.epoch(epoch), self.count)

    def __len__(self) -> int:
        return len(self.loader) if self.count is None else min(self.count, len(self.loader))
