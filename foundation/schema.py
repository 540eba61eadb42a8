"""Building blocks of a config schema (pydantic): strict sections, names checked against a registry,
field markers, and validation errors told in one line.

A name list lives in one registry (a dict in the module that implements the names); the
schema validates against that registry instead of a `Literal` copied by hand:

    dataset: Annotated[str, registered(READERS, "data set")]

A field that may change when an interrupted run resumes carries a `Resumable` marker, read back
by `marked_keys`; `describe_error` turns a pydantic error into `key: message`, and an unknown key
into the closest valid one ("unknown key train.epoch; did you mean train.epochs?").
"""
from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Annotated, Callable, Iterable, Mapping, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Tag

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


@dataclass(frozen=True)
class Resumable:
    """Field marker, `Annotated[int, Resumable()]`: the value may differ when an interrupted run is
    resumed (the run still ends as one uninterrupted run would). `neutral`: it does not change what
    the run computes at all (progress bars, worker counts)."""
    neutral: bool = False


def marked_keys(model: type[BaseModel], wanted: Callable[[object], bool], prefix: str = "") -> set[str]:
    """Dotted keys of the fields (in nested sections and every member of a union) that carry a marker
    for which `wanted(marker)` holds. Items of lists are not looked into."""
    keys = set()
    for name, field in model.model_fields.items():
        if any(wanted(m) for m in field.metadata):
            keys.add(prefix + name)
        for _, section in sections_of(field.annotation):
            keys |= marked_keys(section, wanted, f"{prefix}{name}.")
    return keys


def sections_of(annotation) -> list[tuple[str | None, type[BaseModel]]]:
    """The config sections a field's annotation holds, each with its union tag (None when untagged):
    `Section | None` -> [(None, Section)]; a tagged union -> [(tag, member), ...]."""
    tag = None
    if get_origin(annotation) is Annotated:
        annotation, *metadata = get_args(annotation)
        tag = next((m.tag for m in metadata if isinstance(m, Tag)), None)
    if get_origin(annotation) in (Union, types.UnionType):
        return [found for member in get_args(annotation) for found in sections_of(member)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(tag, annotation)]
    return []


def _items_of(annotation):
    """The item type of a list field, else None."""
    return get_args(annotation)[0] if get_origin(annotation) is list else None


@dataclass
class Located:
    """Where a pydantic error location points: its dotted key (union tags left out), the section
    holding its last part, and, inside a tagged union, the tag and the other members."""
    key: str
    section: type[BaseModel] | None
    tag: str | None = None
    siblings: dict | None = None


def locate(model: type[BaseModel], loc: tuple) -> Located:
    """Follow a pydantic error location (field names, list indices, union tags) through `model`'s sections."""
    parts, section, tag, siblings = [], model, None, None
    rest = list(loc)
    while rest:
        part = rest.pop(0)
        parts.append(str(part))
        field = section.model_fields.get(part) if section is not None and isinstance(part, str) else None
        if field is None or not rest:
            return Located(".".join(parts + [str(p) for p in rest]), section if not rest else None, tag, siblings)
        annotation = field.annotation
        if _items_of(annotation) is not None and isinstance(rest[0], int):
            parts.append(str(rest.pop(0)))
            annotation = _items_of(annotation)
        members = sections_of(annotation)
        tagged = {t: m for t, m in members if t is not None}
        if tagged and rest and rest[0] in tagged:
            tag = rest.pop(0)
            section, siblings = tagged[tag], {t: m for t, m in tagged.items() if t != tag}
        else:
            section, tag, siblings = (members[0][1] if members else None), None, None
    return Located(".".join(parts), section, tag, siblings)


def describe_error(model: type[BaseModel], err: dict) -> str:
    """One line for one pydantic error of `model`: `key: message (got value)`, or for an unknown key
    the closest valid one, or the section it belongs to when it is a key of another union member."""
    where = locate(model, tuple(err["loc"]))
    if err["type"] == "extra_forbidden":
        return unknown_key(where)
    value = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    message = err["msg"].removeprefix("Value error, ")
    return f"{where.key or '(top level)'}: {message}{value}"


def unknown_key(where: Located) -> str:
    parent, _, name = where.key.rpartition(".")
    known = list(where.section.model_fields) if where.section is not None else []
    owners = [tag for tag, member in (where.siblings or {}).items() if name in member.model_fields]
    if owners:  # a key of another member of a tagged union: say which
        return (f"unknown key {where.key} in the {where.tag} section of {parent} "
                f"(a key of the {' and '.join(owners)} section{'s' if len(owners) > 1 else ''})")
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown key {where.key}; did you mean {f'{parent}.' if parent else ''}{close[0]}?"
    section = f"the {where.tag} section of {parent}" if where.tag else (parent or "the top level")
    return f"unknown key {where.key}; {section} has: {', '.join(known)}"
