"""Optimizers and learning-rate schedules, from config: `build_optimizer(params, OptimConfig)`.

Every optimizer a method owns is built here from its own `OptimConfig` section (the
top-level `optim` for the trained network, e.g. `method.generator_optim` for MAXL's
label generator), so SGD, Adam, ... are a config choice, not a constructor in code.

Schedules are stepped once per epoch, after evaluation, with that epoch's record:
  multistep  lr * gamma^(milestones passed)
  cosine     half a cosine from lr to 0 over the epochs after warm-up
  plateau    ReduceLROnPlateau (3D-ResNets-PyTorch): lr * plateau_factor when `plateau_metric`
             (default the validation loss) has not improved for `plateau_patience` epochs
Each scales every parameter group's own lr, so a group at lr 0 (a frozen fine-tuning group) stays 0.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, field_validator, model_validator
from pydantic.types import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from engine.schema import Strict, registered
from foundation.registry import Registry

OPTIMIZERS = Registry("optimizer", entries={"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW})


class OptimConfig(Strict):
    name: Annotated[str, registered(OPTIMIZERS, "optimizer")] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd
    dampening: float = Field(0.0, ge=0.0, le=1.0)  # sgd (3D-ResNets-PyTorch: 0.9)
    nesterov: bool = False  # sgd
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    weight_decay: NonNegativeFloat = 5e-4
    schedule: Literal["multistep", "cosine", "plateau"] = "multistep"
    milestones: list[PositiveInt] = Field(default_factory=lambda: [60, 120, 160])
    gamma: PositiveFloat = 0.2
    warmup_epochs: NonNegativeInt = 0
    plateau_metric: str = "test/loss"  # a key of the epoch's record (metrics.jsonl), minimised
    plateau_patience: NonNegativeInt = 10
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value):
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("milestones must increase")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        if self.nesterov and self.dampening:
            raise ValueError("optim.dampening: SGD with nesterov needs dampening 0")
        if self.schedule == "plateau" and self.warmup_epochs:
            raise ValueError("optim.warmup_epochs: the plateau schedule has no warm-up; set it to 0")
        return self


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """`params`: parameters or parameter groups (a group's own "lr" overrides cfg.lr)."""
    if cfg.name == "sgd":
        extra = {"momentum": cfg.momentum, "dampening": cfg.dampening, "nesterov": cfg.nesterov}
    else:
        extra = {"betas": cfg.betas}
    return OPTIMIZERS[cfg.name](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


class EpochSchedule:
    """A per-epoch schedule the engine steps with the epoch's record; its state travels with the
    checkpoint (engine.checkpoint: schedules.pt), so a resumed run continues it exactly."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
        self.cfg = cfg
        if cfg.schedule == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, cfg, epochs))

    def step(self, record: dict) -> None:
        if self.cfg.schedule != "plateau":
            self.scheduler.step()
            return
        if self.cfg.plateau_metric not in record:
            raise ValueError(f"optim.plateau_metric: {self.cfg.plateau_metric!r} is not in the epoch's record "
                             f"({', '.join(sorted(record))}); the plateau schedule needs it every epoch")
        self.scheduler.step(record[self.cfg.plateau_metric])

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> EpochSchedule:
    """Stepped once per epoch (by the engine), so it is checkpointed rather than wrapped by prepare."""
    return EpochSchedule(optimizer, cfg, epochs)


def depends_on_total_epochs(cfg: OptimConfig) -> bool:
    """Whether the schedule's shape depends on train.epochs (then a run cannot be extended by resuming)."""
    return cfg.schedule == "cosine"


def lr_factor(epoch: int, cfg: OptimConfig, epochs: int) -> float:
    """Multiplier of the base learning rate at the start of `epoch` (multistep and cosine)."""
    if epoch < cfg.warmup_epochs:
        return (epoch + 1) / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(1, epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
