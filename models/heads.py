"""Auxiliary heads: one per source, predicting in that source's label space.

Every head is called as `head(stages, pooled) -> logits`, where `stages` are the
target's stage outputs and `pooled` its pooled final feature. Heads read only the
target's declared interface (models.targets.base.Target): stage_channels,
transfer_module_width and spatial_dims, so the same head serves 2D and 3D targets.

`HEADS` is the one list of head kinds (`model.head` in a config): name -> builder
`(target, num_classes) -> nn.Module`. Add a kind with `@HEADS.register("name")`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from foundation.registry import Registry
from models.layers import Layers, layers

if TYPE_CHECKING:
    from models.targets.base import Target

HeadBuilder = Callable[["Target", int], nn.Module]
HEADS: Registry[HeadBuilder] = Registry("head kind")


def head_names() -> list[str]:
    return sorted(HEADS)


def build_head(kind: str, target: Target, num_classes: int) -> nn.Module:
    return HEADS[kind](target, num_classes)


class LinearHead(nn.Module):
    """Source classifier on the target's pooled final feature (SSKT without a transfer module)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, stages: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


def _conv_bn_relu(nd: Layers, cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nd.conv(cin, cout, kernel, stride, kernel // 2), nd.batch_norm(cout), nn.ReLU(inplace=True)]


class TransferModule(nn.Module):
    """SSKT transfer module: reads every stage, so the source signal reaches all depths.

    Per stage: 1x1 (c -> mid), 3x3 stride 2 (mid -> mid), 1x1 (mid -> width), each
    conv (with bias) + BN + ReLU, then global average pooling; mid = width // 2. The
    per-stage vectors are averaged and classified. With spatial_dims=3 the kernels are
    1x1x1 and 3x3x3, as in the reference's 3D ResNet (`aggregation_feature`).
    """

    def __init__(self, stage_channels: list[int], num_classes: int, width: int, spatial_dims: int = 2,
                 conv_init: str | None = None):
        super().__init__()
        nd, mid = layers(spatial_dims), width // 2
        self.branches = nn.ModuleList(
            nn.Sequential(
                *_conv_bn_relu(nd, c, mid, 1),
                *_conv_bn_relu(nd, mid, mid, 3, stride=2),
                *_conv_bn_relu(nd, mid, width, 1),
                nd.adaptive_avg_pool(1),
                nn.Flatten(1),
            )
            for c in stage_channels
        )
        self.fc = nn.Linear(width, num_classes)
        if conv_init == "kaiming_fan_out":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif conv_init is not None:
            raise ValueError(f"unknown transfer-module conv init {conv_init!r}")

    def forward(self, stages: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        if len(stages) != len(self.branches):
            raise ValueError(f"expected {len(self.branches)} stage outputs, got {len(stages)}")
        feats = torch.stack([branch(s) for branch, s in zip(self.branches, stages)])
        return self.fc(feats.mean(dim=0))


@HEADS.register("linear")
def linear_head(target: Target, num_classes: int) -> LinearHead:
    return LinearHead(target.stage_channels[-1], num_classes)


@HEADS.register("transfer_module")
def transfer_module(target: Target, num_classes: int) -> TransferModule:
    return TransferModule(target.stage_channels, num_classes, target.transfer_module_width, target.spatial_dims,
                          target.head_conv_init)
