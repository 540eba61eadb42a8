"""Auxiliary heads: one per source, predicting in that source's label space.

Every head is called as `head(stages, pooled) -> logits`, where `stages` are the
target's stage outputs and `pooled` its pooled final feature.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

HeadKind = Literal["linear", "transfer_module"]


class LinearHead(nn.Module):
    """Source classifier on the target's pooled final feature (SSKT without a transfer module)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, stages: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class TransferModule(nn.Module):
    """SSKT transfer module: reads every stage, so the source signal reaches all depths.

    Per stage: 1x1 (c -> mid), 3x3 stride 2 (mid -> mid), 1x1 (mid -> width), each
    conv+BN+ReLU, then GAP. The per-stage vectors are averaged and classified.
    """

    def __init__(self, stage_channels: list[int], num_classes: int, width: int):
        super().__init__()
        mid = width // 2
        self.branches = nn.ModuleList(
            nn.Sequential(
                *_conv_bn_relu(c, mid, 1),
                *_conv_bn_relu(mid, mid, 3, stride=2),
                *_conv_bn_relu(mid, width, 1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(1),
            )
            for c in stage_channels
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, stages: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        if len(stages) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} stage outputs, got {len(stages)}")
        feats = torch.stack([branch(s) for branch, s in zip(self.branches, stages)])
        return self.fc(feats.mean(dim=0))


def transfer_module_width(target: nn.Module) -> int:
    """Width rule of the SSKT reference implementation."""
    if target.kind == "imagenet":
        return 1000
    if target.kind in ("cifar", "vgg"):
        return target.stage_channels[-1]
    raise ValueError(f"no transfer-module width rule for target kind {target.kind!r}")


def build_head(kind: HeadKind, target: nn.Module, num_classes: int) -> nn.Module:
    if kind == "linear":
        return LinearHead(target.stage_channels[-1], num_classes)
    if kind == "transfer_module":
        return TransferModule(target.stage_channels, num_classes, transfer_module_width(target))
    raise ValueError(f"unknown head kind {kind!r}; expected 'linear' or 'transfer_module'")
