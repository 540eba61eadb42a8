"""SSKT: task loss + alpha * sum over sources of aux_loss(head_s(x), source_s(x))."""
from __future__ import annotations

from typing import Annotated, Literal

from engine.losses import AUX_LOSSES, TASK_LOSSES
from engine.methods.base import LossMethod, MethodConfig, register_method
from engine.methods.scratch import TaskLoss
from engine.schema import FocalGamma, Temperature, Weight, registered
from models.registry import build_head


class SSKTConfig(MethodConfig):
    name: Literal["sskt"] = "sskt"
    task_loss: TaskLoss = "ce"
    aux_loss: Annotated[str, registered(AUX_LOSSES, "auxiliary loss")] = "kd"
    alpha: Weight = 0.1  # weight of the auxiliary terms
    temperature: Temperature = 3.0
    aux_reduction: Literal["mean", "batchmean"] = "batchmean"  # reference KD: 'mean' (over batch x classes)
    focal_gamma: FocalGamma = 2.0

    def check(self, config):
        if not config.sources:
            raise ValueError("method.name: sskt needs at least one entry in sources")


@register_method
class SSKT(LossMethod):
    Config = SSKTConfig

    def heads(self, target):  # one head per source, sized to its label space
        return {s.name: build_head(self.ctx.config.model.head, target, s.num_classes) for s in self.ctx.sources}

    def loss(self, output, batch, source_outputs):
        cfg = self.cfg
        loss = TASK_LOSSES[cfg.task_loss](output.logits, batch["label"], gamma=cfg.focal_gamma)
        terms = {"task": loss.detach()}
        for name, head_logits in output.aux.items():
            term = AUX_LOSSES[cfg.aux_loss](head_logits, source_outputs[name], temperature=cfg.temperature,
                                            reduction=cfg.aux_reduction, gamma=cfg.focal_gamma)
            loss = loss + cfg.alpha * term
            terms[f"aux/{name}"] = term.detach()
        return loss, terms
