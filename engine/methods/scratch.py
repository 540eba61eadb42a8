"""Plain supervised training of the target: the baseline every table compares against."""
from __future__ import annotations

from engine.losses import TASK_LOSSES
from engine.methods.base import Method


class Scratch(Method):
    def __init__(self, cfg):
        super().__init__()
        self.task_loss = TASK_LOSSES[cfg.task_loss]
        self.gamma = cfg.focal_gamma

    def forward(self, output, batch, source_outputs):
        loss = self.task_loss(output.logits, batch["label"], gamma=self.gamma)
        return loss, {"task": loss.detach()}
