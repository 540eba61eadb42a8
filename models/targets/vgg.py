"""VGG-16 with BatchNorm for 32x32 inputs (the usual CIFAR variant: one linear classifier).

Stage i is conv block i; its output is taken before the block's max-pool, so the
max-pool opens the next stage. The last block's max-pool is dropped: `pool` is
global average pooling over block 5's pre-pool map (2x2 at 32x32), so the
classifier sees the same map the transfer module reads, and any input size works.
"""
from __future__ import annotations

import torch
from torch import nn

from models.registry import register_target
from models.targets.base import Target

_VGG16_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


class CifarVGG(Target):

    def __init__(self, blocks: list[list[int]], num_classes: int):
        super().__init__()
        self.stage_channels = [block[-1] for block in blocks]
        self.transfer_module_width = self.stage_channels[-1]  # reference rule for VGG targets
        stages, in_ch = [], 3
        for i, block in enumerate(blocks):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)] if i > 0 else []
            for out_ch in block:  # conv bias kept as in torchvision's vgg16_bn
                layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
                in_ch = out_ch
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(in_ch, num_classes)
        for m in self.modules():  # torchvision's VGG init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


@register_target("vgg16_bn")
def vgg16_bn(num_classes: int) -> CifarVGG:
    return CifarVGG(_VGG16_BLOCKS, num_classes)
