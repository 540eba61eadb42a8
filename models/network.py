"""The trained model: a target network plus one auxiliary head per source.

Targets (models/targets/) expose their stage outputs; heads (models/heads.py)
read them. At deployment only the target is kept: `deployed_state_dict()`.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class ModelOutput(NamedTuple):  # a NamedTuple so Accelerate's autocast output conversion walks it
    logits: torch.Tensor
    aux: dict[str, torch.Tensor]  # source name -> head logits in that source's label space


def unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (what every loader yields) -> float in [0, 1]; float input is taken as already
    in [0, 1]. Here, on the training device, rather than in the loaders: a uint8 batch is a quarter
    of the bytes to move to a GPU, and the loaders' CPU time goes to decoding."""
    return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels


class Normalize(nn.Module):
    """Images and clips arrive as uint8 pixels (or float in [0, 1]); each network normalizes them
    its own way.

    Per channel (dim 1) for any rank: [N, C, H, W] images, [N, C, T, H, W] clips.
    """

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).flatten(), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).flatten(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or self.mean.numel() not in (1, x.shape[1]):
            raise ValueError(f"Normalize expects [N, {self.mean.numel()}, ...] inputs, got shape {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (unit_float(x) - self.mean.view(shape)) / self.std.view(shape)


class TargetWithHeads(nn.Module):
    def __init__(self, target: nn.Module, heads: dict[str, nn.Module], mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.target = target
        self.heads = nn.ModuleDict(heads)
        self.memory_format = torch.contiguous_format  # of the weights and of each batch (use_channels_last)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        stages = self.target.forward_stages(self.normalize(images).contiguous(memory_format=self.memory_format))
        pooled = self.target.pool(stages[-1])
        logits = self.target.classifier(pooled)
        return ModelOutput(logits, {name: head(stages, pooled) for name, head in self.heads.items()})

    def deployed_state_dict(self) -> dict[str, torch.Tensor]:
        return self.target.state_dict()


def is_3d(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv3d) for m in module.modules())


def use_channels_last(module: nn.Module) -> nn.Module:
    """A 2D network's weights, and the batches a TargetWithHeads passes on, in torch.channels_last (NHWC)."""
    module.to(memory_format=torch.channels_last)
    for m in module.modules():
        if isinstance(m, TargetWithHeads):
            m.memory_format = torch.channels_last
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
