"""ImageNet-style ResNet-18/34/50: torchvision's ResNet exposing its four stages.

Subclassing (rather than wrapping) keeps the state_dict keys identical to
torchvision's, so its pretrained weights load with strict=True.
"""
from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models.registry import register_target
from models.targets.base import Target


class StagedResNet(Target, ResNet):
    classifier_name = "fc"  # torchvision's key
    transfer_module_width = 1000  # reference rule for ImageNet-style ResNets
    head_conv_init = "kaiming_fan_out"  # torchvision's init loop, which in the reference covered the heads too

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], num_classes: int, **kw):
        super().__init__(block, layers, num_classes=num_classes, **kw)
        self.stage_channels = [64 * block.expansion * 2**i for i in range(4)]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs


@register_target("resnet18")
def resnet18(num_classes: int, **kw) -> StagedResNet:
    return StagedResNet(BasicBlock, [2, 2, 2, 2], num_classes, **kw)


@register_target("resnet34")
def resnet34(num_classes: int, **kw) -> StagedResNet:
    return StagedResNet(BasicBlock, [3, 4, 6, 3], num_classes, **kw)


@register_target("resnet50")
def resnet50(num_classes: int, **kw) -> StagedResNet:
    return StagedResNet(Bottleneck, [3, 4, 6, 3], num_classes, **kw)
