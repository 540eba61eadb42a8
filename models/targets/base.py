"""The interface every target network declares, once.

A target is a classifier whose stage outputs the auxiliary heads read:

    spatial_dims            2: images [N, C, H, W]; 3: clips [N, C, T, H, W]. Heads build their
                            layers for it (models.layers), so one head class serves both.
    stage_channels          channels of each stage output, in order (set in __init__)
    transfer_module_width   branch width of the SSKT transfer module for this target, the
                            reference implementation's rule (set by each target)
    head_conv_init          how the reference initialises the transfer module's convs on this target:
                            None (PyTorch's default) or "kaiming_fan_out" (ImageNet-style ResNets,
                            whose init loop also reached the auxiliary convs)
    classifier_name         attribute that holds the nn.Linear classifier; "fc" keeps
                            torchvision's and 3D-ResNets-PyTorch's state_dict keys
    forward_stages(x)       -> the stage outputs, a list
    pool(features)          -> [N, C]: global average over every position (and frame)
    classifier              the nn.Linear applied to pool(last stage)
    reset_classifier(n)     replace the classifier by a fresh nn.Linear for n classes (fine-tuning)
    forward(x)              classifier(pool(forward_stages(x)[-1])): the logits
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class Target(nn.Module):
    spatial_dims: ClassVar[int] = 2
    classifier_name: ClassVar[str] = "classifier"
    head_conv_init: ClassVar[str | None] = None
    stage_channels: list[int]
    transfer_module_width: int

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        # Parameter-free, so it leaves the state_dict alone.
        return features.mean(dim=tuple(range(2, features.dim())))

    @property
    def classifier(self) -> nn.Linear:
        # A view of the registered submodule, not a second attribute: registering it twice
        # would duplicate its state_dict keys. nn.Module.__setattr__ still registers
        # `self.classifier = nn.Linear(...)` in _modules, which this property then reads.
        return self._modules[self.classifier_name]

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh nn.Linear (PyTorch's default init), as 3D-ResNets-PyTorch does when fine-tuning."""
        old = self.classifier
        setattr(self, self.classifier_name,
                nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.forward_stages(x)[-1]))


def check_target(name: str, target: nn.Module) -> None:
    """A registered factory must return a complete Target; say which part is missing."""
    if not isinstance(target, Target):
        raise TypeError(f"target {name!r} is a {type(target).__name__}, not a models.targets.base.Target")
    for attr in ("stage_channels", "transfer_module_width"):
        if not hasattr(target, attr):
            raise TypeError(f"target {name!r} ({type(target).__name__}) does not declare {attr}")
    if not isinstance(target.classifier, nn.Linear):
        raise TypeError(f"target {name!r}: {target.classifier_name} is not an nn.Linear")
