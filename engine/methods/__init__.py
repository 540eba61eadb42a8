"""Methods by name. A method is one module here: its config section and its class, registered together
(`@register_method`; METHODS imports every module of this package on its first lookup).

`MethodConfig` is the `method` section's schema: a pydantic union of every registered method's
config, picked by `method.name` (default sskt), so no method's field is valid in another's section.
"""
from typing import Annotated, Union

from pydantic import Discriminator, Tag

from engine.methods.base import (METHODS, Context, Deployed, LossMethod, Method, MethodConfig, Step,
                                 register_method)

DEFAULT_METHOD = "sskt"


def _method_name(section) -> str | None:
    if isinstance(section, dict):
        return section.get("name", DEFAULT_METHOD)
    return getattr(section, "name", None)


MethodSection = Annotated[
    Union[tuple(Annotated[cls.Config, Tag(name)] for name, cls in METHODS.items())],
    Discriminator(_method_name, custom_error_type="method_name",
                  custom_error_message=f"unknown method; known: {', '.join(sorted(METHODS))}"),
]


def build_method(cfg: MethodConfig) -> Method:
    return METHODS[cfg.name](cfg)


__all__ = ["METHODS", "Context", "Deployed", "LossMethod", "Method", "MethodConfig", "MethodSection", "Step",
           "build_method", "register_method"]
