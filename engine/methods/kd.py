"""Knowledge distillation (Hinton et al. 2015): (1 - alpha) * task + alpha * T^2 * KL(teacher_T || student_T).

The teacher is the experiment's one source, in the target's label space (a checkpoint this
engine exported, a torchvision model or any local checkpoint), so its outputs come through
the same augmentation-exact HDF5 cache as SSKT's sources. Multi-label (VOC, `task_loss: bce`):
the same formula with one sigmoid per class, (1 - alpha) * BCE + alpha * T^2 * binary KL.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from engine.losses import TASK_LOSSES, binary_kd, kd
from engine.methods.base import LossMethod, MethodConfig, register_method
from engine.methods.scratch import TaskLoss
from engine.schema import ConfigError, FocalGamma, Temperature


class KDConfig(MethodConfig):
    name: Literal["kd"] = "kd"
    task_loss: TaskLoss = "ce"
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.9  # weight of the distillation term
    temperature: Temperature = 4.0
    reduction: Literal["batchmean", "mean"] = "batchmean"
    focal_gamma: FocalGamma = 2.0

    def check(self, config):
        if len(config.sources) != 1:
            raise ValueError(f"method.name: kd needs exactly one entry in sources, the teacher (got {len(config.sources)})")


@register_method
class KD(LossMethod):
    Config = KDConfig

    def build(self, ctx):
        teacher = ctx.sources[0]
        if teacher.num_classes != ctx.num_classes:
            raise ConfigError(f"sources.0: the kd teacher {teacher.name!r} predicts {teacher.num_classes} classes, "
                             f"the target task has {ctx.num_classes}")
        super().build(ctx)

    def loss(self, output, batch, source_outputs):
        cfg = self.cfg
        (teacher,) = source_outputs.values()
        task = TASK_LOSSES[cfg.task_loss](output.logits, batch["label"], gamma=cfg.focal_gamma)
        distill = (binary_kd if cfg.task_loss == "bce" else kd)(output.logits, teacher, temperature=cfg.temperature,
                                                                 reduction=cfg.reduction)
        return (1 - cfg.alpha) * task + cfg.alpha * distill, {"task": task.detach(), "kd": distill.detach()}
