"""Plain supervised training of the target: the baseline every table compares against."""
from __future__ import annotations

from typing import Annotated, Literal

from engine.losses import TASK_LOSSES
from engine.methods.base import LossMethod, MethodConfig, register_method
from engine.schema import FocalGamma, registered

TaskLoss = Annotated[str, registered(TASK_LOSSES, "task loss")]


class ScratchConfig(MethodConfig):
    name: Literal["scratch"] = "scratch"
    task_loss: TaskLoss = "ce"
    focal_gamma: FocalGamma = 2.0

    def check(self, config):
        if config.sources:
            raise ValueError("method.name: scratch uses no sources; set sources=[]")


@register_method
class Scratch(LossMethod):
    Config = ScratchConfig

    def loss(self, output, batch, source_outputs):
        loss = TASK_LOSSES[self.cfg.task_loss](output.logits, batch["label"], gamma=self.cfg.focal_gamma)
        return loss, {"task": loss.detach()}
