"""Optimizers and learning-rate schedules, from config: `build_optimizer(params, OptimConfig)`.

Every optimizer a method owns is built here from its own `OptimConfig` section (the
top-level `optim` for the trained network, e.g. `method.generator_optim` for MAXL's
label generator), so SGD, Adam, ... are a config choice, not a constructor in code.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator
from pydantic.types import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from engine.schema import Strict, registered

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class OptimConfig(Strict):
    name: Annotated[str, registered(OPTIMIZERS, "optimizer")] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    weight_decay: NonNegativeFloat = 5e-4
    schedule: Literal["multistep", "cosine"] = "multistep"
    milestones: list[PositiveInt] = Field(default_factory=lambda: [60, 120, 160])
    gamma: PositiveFloat = 0.2
    warmup_epochs: NonNegativeInt = 0

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("milestones must increase")
        return value


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        extra = {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
    else:
        extra = {"betas": cfg.betas}
    return OPTIMIZERS[cfg.name](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
    """Stepped once per epoch (by the engine), so it is checkpointed rather than wrapped by prepare."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg, epochs))


def depends_on_total_epochs(cfg: OptimConfig) -> bool:
    """Whether the schedule's shape depends on train.epochs (then a run cannot be extended by resuming)."""
    return cfg.schedule == "cosine"


def lr_factor(epoch: int, cfg: OptimConfig, epochs: int) -> float:
    """Multiplier of the base learning rate at the start of `epoch`."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(1, epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
