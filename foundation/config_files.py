"""Config files: YAML read safely, and a file that includes others (`base:`), merged into one mapping.

    # configs/cifar10/resnet20_kd.yaml
    base: ../_bases/cifar10.yaml          # or a list, [a.yaml, b.yaml], merged in that order
    method: {name: kd, alpha: 0.9}

A base is a YAML mapping named relative to the file that includes it, and may name bases of its
own. Mappings merge key by key, recursively: the including file wins over its bases, a later base
over an earlier one; any other value, a list included, replaces the one below it whole. A missing
base, a cycle of bases and a syntax error are one-line `ConfigError`s naming the file (and for a
syntax error its line and column).

`read_config_file` also says which file set each key (`Origins`), so that an error about a key
can name the base it came from.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from foundation.schema import ConfigError

INCLUDE_KEY = "base"

Origins = dict[tuple[str, ...], Path]  # key path -> the file that set it last


def read_yaml(path: Path) -> object:
    """A YAML file's content (safe_load: a file never runs code)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None


def read_config_file(path: Path) -> tuple[dict, Origins]:
    """The file's mapping with its bases merged in (the `base` key removed), and where each key came from."""
    merged, origins = {}, {}
    _merge_file(Path(path), merged, origins, chain=())
    return merged, origins


def _merge_file(path: Path, merged: dict, origins: Origins, chain: tuple[Path, ...]) -> None:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    names = raw.pop(INCLUDE_KEY, [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: {INCLUDE_KEY}: expected a file name or a list of file names, got {names!r}")
    chain = chain + (path.resolve(),)
    for name in names:
        base = path.parent / name
        if base.resolve() in chain:
            cycle = " -> ".join(str(p) for p in (*chain, base.resolve()))
            raise ConfigError(f"{path}: {INCLUDE_KEY} {name} includes itself: {cycle}")
        if not base.is_file():
            raise ConfigError(f"{path}: {INCLUDE_KEY} {name} not found (looked for {base})")
        _merge_file(base, merged, origins, chain)
    merge_into(merged, raw, path, origins)


def merge_into(target: dict, over: dict, source: Path, origins: Origins, prefix: tuple[str, ...] = ()) -> None:
    """Deep merge `over` into `target`: mappings key by key, anything else replaced whole."""
    for key, value in over.items():
        at = prefix + (str(key),)
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_into(target[key], value, source, origins, at)
            origins[at] = source  # the mapping's own keys keep the files that set them
        else:
            target[key] = value
            set_origin(origins, at, source)


def set_origin(origins: Origins, at: tuple[str, ...], source: Path) -> None:
    """`source` set the whole value at key path `at`, replacing what was there."""
    for below in [k for k in origins if k[:len(at)] == at]:
        del origins[below]
    origins[at] = source


def origin_of(origins: Origins, key: str) -> Path | None:
    """The file that set the dotted `key` (or the nearest section above it that a file set)."""
    parts = tuple(key.split("."))
    for end in range(len(parts), 0, -1):
        if parts[:end] in origins:
            return origins[parts[:end]]
    return None
