"""CIFAR ResNets of He et al. 2016 (Sec. 4.2): 6n+2 layers, stages of 16/32/64 channels.

Follows the widely used akamaster/pytorch_resnet_cifar10 implementation
(option-A shortcuts, Kaiming-normal init), which SSKT's CIFAR targets build on.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.registry import register_target
from models.targets.base import Target

Shortcut = Literal["A", "B"]


class _PadShortcut(nn.Module):
    """Option A: parameter-free identity that subsamples and zero-pads the new channels."""

    def __init__(self, in_planes: int, planes: int):
        super().__init__()
        self.pad = planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = _PadShortcut(in_planes, planes)
            else:  # option B: 1x1 projection, kept for comparison with option-B parameter counts
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(Target):

    def __init__(self, blocks_per_stage: int, num_classes: int, shortcut: Shortcut = "A"):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.stage_channels = [16, 32, 64]
        self.transfer_module_width = self.stage_channels[-1]  # reference rule for CIFAR targets
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        stages, in_planes = [], 16
        for i, planes in enumerate(self.stage_channels):
            blocks = []
            for b in range(blocks_per_stage):
                stride = 2 if i > 0 and b == 0 else 1
                blocks.append(_BasicBlock(in_planes, planes, stride, shortcut))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(in_planes, num_classes)
        for m in self.modules():  # as in akamaster: Kaiming-normal weights, default biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def _register(depth: int) -> None:
    @register_target(f"resnet{depth}")
    def build(num_classes: int, shortcut: Shortcut = "A") -> CifarResNet:
        return CifarResNet((depth - 2) // 6, num_classes, shortcut)


for _depth in (8, 20, 32, 44, 56, 110):
    _register(_depth)
