"""Name -> target network factory, timm-style; the head kinds are re-exported from models.heads.

Every module of models/targets/ registers its factories with `@register_target(name)`; the registry
imports them on its first lookup (foundation.registry), so a new target module needs no import list.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from foundation.registry import Registry
from models.heads import HEADS, build_head, head_names

__all__ = ["TARGETS", "register_target", "build_target", "target_names", "HEADS", "build_head", "head_names"]

if TYPE_CHECKING:
    from models.targets.base import Target

TARGETS: Registry[Callable[..., "Target"]] = Registry("target", package="models.targets")
register_target = TARGETS.register  # @register_target("resnet20") def build(num_classes, **kw) -> Target


def target_names() -> list[str]:
    return sorted(TARGETS)


def build_target(name: str, num_classes: int, **kw) -> Target:
    target = TARGETS[name](num_classes=num_classes, **kw)
    from models.targets.base import check_target  # here, not at the top: targets import this module

    check_target(name, target)
    return target
