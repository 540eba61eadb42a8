"""Layer types by spatial dimension, so 2D (NCHW) and 3D (NCTHW) networks share one builder."""
from __future__ import annotations

from typing import NamedTuple

from torch import nn


class Layers(NamedTuple):
    conv: type[nn.Module]
    batch_norm: type[nn.Module]
    max_pool: type[nn.Module]
    adaptive_avg_pool: type[nn.Module]


_LAYERS = {
    2: Layers(nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d),
    3: Layers(nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.AdaptiveAvgPool3d),
}


def layers(spatial_dims: int) -> Layers:
    """`layers(2).conv is nn.Conv2d`, `layers(3).batch_norm is nn.BatchNorm3d`."""
    if spatial_dims not in _LAYERS:
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (clips), got {spatial_dims!r}")
    return _LAYERS[spatial_dims]
