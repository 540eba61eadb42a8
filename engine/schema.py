"""Building blocks of the config schema: strict sections and names checked against a registry.

A name list lives in one registry (a dict in the module that implements the names); the
schema validates against that registry instead of a `Literal` copied by hand:

    dataset: Annotated[str, registered(READERS, "data set")]
"""
from __future__ import annotations

from typing import Annotated, Callable, Iterable, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from foundation.errors import UserError


class ConfigError(UserError):
    """One line that names the file, key or value at fault; the entry points exit 2 on it."""


class Strict(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def registered(registry: Mapping | Callable[[], Iterable[str]], what: str) -> AfterValidator:
    """A validator accepting only the names of `registry` (a mapping, or a function listing names)."""

    def check(name: str) -> str:
        names = registry() if callable(registry) else registry
        if name not in names:
            raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(names))}")
        return name

    return AfterValidator(check)


# Constrained numbers that several method sections share (a range error names the key, exit 2).
Temperature = Annotated[float, Field(gt=0.0)]
Weight = Annotated[float, Field(ge=0.0)]  # a loss term's weight
FocalGamma = Annotated[float, Field(ge=0.0)]
