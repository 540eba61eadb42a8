"""The config schema's shared pieces in the engine: the building blocks (foundation.schema) and the
constrained numbers that several method sections share (a range error names the key, exit 2)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from foundation.schema import ConfigError, Resumable, Strict, registered

__all__ = ["ConfigError", "FocalGamma", "Resumable", "Strict", "Temperature", "Weight", "registered"]

Temperature = Annotated[float, Field(gt=0.0)]
Weight = Annotated[float, Field(ge=0.0)]  # a loss term's weight
FocalGamma = Annotated[float, Field(ge=0.0)]
