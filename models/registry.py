"""Name -> target network factory, timm-style, plus the head builder.

Target modules register themselves on import; the registry imports them lazily
so that `models.targets.*` can import `register_target` without a cycle.
"""
from __future__ import annotations

import importlib
from typing import Callable, TypeVar

from torch import nn

from models.heads import build_head, transfer_module_width

__all__ = ["register_target", "build_target", "target_names", "build_head", "transfer_module_width"]

TargetFactory = Callable[..., nn.Module]
F = TypeVar("F", bound=TargetFactory)

_TARGETS: dict[str, TargetFactory] = {}


def register_target(name: str) -> Callable[[F], F]:
    """Decorator: `@register_target("resnet20") def build(num_classes, **kw) -> nn.Module`."""

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


def build_target(name: str, num_classes: int, **kw) -> nn.Module:
    _load_targets()
    if name not in _TARGETS:
        raise KeyError(f"unknown target {name!r}; known targets: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name](num_classes=num_classes, **kw)
