"""Optimizers and learning-rate schedules, from config: `build_optimizer(params, OptimConfig)`.

Every optimizer a method owns is built here from its own `OptimConfig` section (the
top-level `optim` for the trained network, e.g. `method.generator_optim` for MAXL's
label generator), so SGD, Adam, ... are a config choice, not a constructor in code.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field

from engine.schema import Strict, registered

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


class OptimConfig(Strict):
    name: Annotated[str, registered(OPTIMIZERS, "optimizer")] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    weight_decay: float = 5e-4
    schedule: Literal["multistep", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [60, 120, 160])
    gamma: float = 0.2
    warmup_epochs: int = 0


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        extra = {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
    else:
        extra = {"betas": cfg.betas}
    return OPTIMIZERS[cfg.name](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
    """Stepped once per epoch (by the engine), so it is checkpointed rather than wrapped by prepare."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, cfg, epochs))


def lr_factor(epoch: int, cfg: OptimConfig, epochs: int) -> float:
    """Multiplier of the base learning rate at the start of `epoch`."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(1, epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
