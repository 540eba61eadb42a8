"""Name -> target network factory, timm-style; the head kinds are re-exported from models.heads.

Target modules register themselves on import; the registry imports them lazily
so that `models.targets.*` can import `register_target` without a cycle.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, TypeVar

from models.heads import HEADS, build_head, head_names

__all__ = ["register_target", "build_target", "target_names", "HEADS", "build_head", "head_names"]

if TYPE_CHECKING:
    from models.targets.base import Target

TargetFactory = Callable[..., "Target"]
F = TypeVar("F", bound=TargetFactory)

_TARGETS: dict[str, TargetFactory] = {}


def register_target(name: str) -> Callable[[F], F]:
    """Decorator: `@register_target("resnet20") def build(num_classes, **kw) -> Target`."""

    def decorate(factory: F) -> F:
        if name in _TARGETS:
            raise ValueError(f"target {name!r} is already registered")
        _TARGETS[name] = factory
        return factory

    return decorate


def _load_targets() -> None:
    importlib.import_module("models.targets")


def target_names() -> list[str]:
    _load_targets()
    return sorted(_TARGETS)


def build_target(name: str, num_classes: int, **kw) -> Target:
    _load_targets()
    if name not in _TARGETS:
        raise KeyError(f"unknown target {name!r}; known targets: {', '.join(sorted(_TARGETS))}")
    target = _TARGETS[name](num_classes=num_classes, **kw)
    from models.targets.base import check_target  # here, not at the top: targets import this module

    check_target(name, target)
    return target
