"""3D ResNet-10/18/34/50 of Hara et al. (CVPR 2018), as in 3D-ResNets-PyTorch.

Follows that project's models/resnet.py of 2017-18 (the one the SSKT reference copied
and whose Kinetics checkpoints, e.g. resnet-18-kinetics.pth, it fine-tuned):
conv1 7x7x7 stride (1, 2, 2) padding 3, BN, ReLU, max-pool 3x3x3 stride 2 (time too),
four stages of BasicBlock/Bottleneck with 3x3x3 convs (64/128/256/512 planes; stride 2
in stages 2-4), global average pooling, fc. Module names are the reference's (conv1,
bn1, layer1-4, downsample, fc), so its state_dicts load unchanged.

Shortcut A (the SSKT paper's `--resnet_shortcut A`, the default here) subsamples and
appends zero channels, parameter-free; the reference builds it from `out.data`, so no
gradient flows through it: reproduced. Shortcut B is a 1x1x1 projection + BN.
Inputs are clips [N, 3, T, H, W] (the reference: 16 x 112 x 112). The reference's
fixed-size AvgPool3d equals the global average pooling used here at its clip sizes.

Three stem options of that project's later models/resnet.py (2020), for small clips:
`conv1_t_size` (conv1's temporal kernel; 1: each frame's own 7x7 features), `conv1_t_stride`
and `no_max_pool` (stage 1 keeps conv1's resolution: twice the frames, height and width).
Two more, their spatial counterparts for clips as small as CIFAR's images: `conv1_hw_size` and
`conv1_hw_stride` (3 and 1: a CIFAR ResNet's stem, stage 1 at the clip's full height and width).
Their defaults give the 2017-18 network above.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.layers import layers
from models.registry import register_target
from models.targets.base import Target

Shortcut = Literal["A", "B"]
_3D = layers(3)


class _ZeroPadShortcut(nn.Module):
    """Shortcut A: every `stride`-th position in T, H and W, zero channels appended."""

    def __init__(self, out_channels: int, stride: int):
        super().__init__()
        self.out_channels, self.stride = out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        x = x[:, :, ::s, ::s, ::s].detach()  # the reference's `out.data`: no gradient through the shortcut
        return F.pad(x, (0, 0, 0, 0, 0, 0, 0, self.out_channels - x.shape[1]))


def _conv3x3x3(cin: int, cout: int, stride: int = 1) -> nn.Module:
    return _3D.conv(cin, cout, 3, stride, 1, bias=False)


class BasicBlock3d(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3x3(inplanes, planes, stride)
        self.bn1 = _3D.batch_norm(planes)
        self.conv2 = _conv3x3x3(planes, planes)
        self.bn2 = _3D.batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck3d(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _3D.conv(inplanes, planes, 1, bias=False)
        self.bn1 = _3D.batch_norm(planes)
        self.conv2 = _conv3x3x3(planes, planes, stride)
        self.bn2 = _3D.batch_norm(planes)
        self.conv3 = _3D.conv(planes, planes * 4, 1, bias=False)
        self.bn3 = _3D.batch_norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet3d(Target):
    spatial_dims = 3
    classifier_name = "fc"  # the reference's key
    transfer_module_width = 1000  # the reference's 3D transfer module: branch width 1000, middle 500

    def __init__(self, block: type[BasicBlock3d | Bottleneck3d], blocks_per_stage: list[int], num_classes: int,
                 shortcut: Shortcut = "A", depth: int | None = None, width: int = 64,
                 no_max_pool: bool = False, conv1_t_size: int = 7, conv1_t_stride: int = 1,
                 conv1_hw_size: int = 7, conv1_hw_stride: int = 2):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.shortcut = shortcut
        # the `arch` of the reference's checkpoints (which are all of the full width)
        self.pretrained_arch = f"resnet-{depth}" if depth and width == 64 else None
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.transfer_module_width = self.transfer_module_width * width // 64  # the reference's at full width
        self.conv1 = _3D.conv(3, width, (conv1_t_size, conv1_hw_size, conv1_hw_size),
                              (conv1_t_stride, conv1_hw_stride, conv1_hw_stride),
                              (conv1_t_size // 2, conv1_hw_size // 2, conv1_hw_size // 2), bias=False)
        self.bn1 = _3D.batch_norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if no_max_pool else _3D.max_pool(3, 2, 1)
        self.inplanes = width
        self.layer1 = self._make_stage(block, planes[0], blocks_per_stage[0], 1)
        self.layer2 = self._make_stage(block, planes[1], blocks_per_stage[1], 2)
        self.layer3 = self._make_stage(block, planes[2], blocks_per_stage[2], 2)
        self.layer4 = self._make_stage(block, planes[3], blocks_per_stage[3], 2)
        self.stage_channels = [p * block.expansion for p in planes]
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)
        for m in self.modules():  # the reference's init; the Linear keeps PyTorch's default
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_stage(self, block: type[BasicBlock3d | Bottleneck3d], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            if self.shortcut == "A":
                downsample = _ZeroPadShortcut(out, stride)
            else:
                downsample = nn.Sequential(_3D.conv(self.inplanes, out, 1, stride, bias=False), _3D.batch_norm(out))
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        stage += [block(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs


_DEPTHS = {10: (BasicBlock3d, [1, 1, 1, 1]), 18: (BasicBlock3d, [2, 2, 2, 2]),
           34: (BasicBlock3d, [3, 4, 6, 3]), 50: (Bottleneck3d, [3, 4, 6, 3])}


def _register(depth: int) -> None:
    block, blocks_per_stage = _DEPTHS[depth]

    @register_target(f"resnet3d_{depth}")
    def build(num_classes: int, shortcut: Shortcut = "A") -> ResNet3d:
        return ResNet3d(block, blocks_per_stage, num_classes, shortcut, depth)


for _depth in _DEPTHS:
    _register(_depth)


# The video demo's target on 2 CPU cores: ResNet-10 at a quarter of the width (16-128 channels).
@register_target("resnet3d_10_w16")
def _resnet3d_10_w16(num_classes: int, shortcut: Shortcut = "A") -> ResNet3d:
    return ResNet3d(BasicBlock3d, [1, 1, 1, 1], num_classes, shortcut, 10, width=16)


# The same with a stem for small clips (the video demo's 32x32): conv1 1x7x7 and no max pool, so stage 1
# sees each frame at 16x16 rather than 8x8. On the demo's clips it learns faster than the 2017-18 stem,
# at ~1.3x its cost per step on a CPU core.
@register_target("resnet3d_10_w16_small_clips")
def _resnet3d_10_w16_small_clips(num_classes: int, shortcut: Shortcut = "A") -> ResNet3d:
    return ResNet3d(BasicBlock3d, [1, 1, 1, 1], num_classes, shortcut, 10, width=16, conv1_t_size=1,
                    no_max_pool=True)


# For the video demo's 32x32 clips, a CIFAR ResNet's stem: conv1 3x3x3, stride 2 in time only, no max pool, so
# stage 1 sees 4 x 32 x 32 (the 2D demo's ResNet-20 keeps 32 x 32 through its first stage too). On the video
# demo's design with subtle motion (docs/demo.md) scratch reaches 85 % with it against 73 % with the
# small-clips stem, at twice that stem's cost.
@register_target("resnet3d_10_w16_full_res")
def _resnet3d_10_w16_full_res(num_classes: int, shortcut: Shortcut = "A") -> ResNet3d:
    return ResNet3d(BasicBlock3d, [1, 1, 1, 1], num_classes, shortcut, 10, width=16, conv1_t_size=3,
                    conv1_t_stride=2, conv1_hw_size=3, conv1_hw_stride=1, no_max_pool=True)
