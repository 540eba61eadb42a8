"""Names -> things (network factories, head builders, methods, data set readers, optimizers), timm-style:

    TARGETS = Registry("target", package="models.targets")

    @TARGETS.register("resnet20")
    def resnet20(num_classes, **kw): ...

    TARGETS["resnet20"]            # UnknownName (a KeyError) naming the known names when unknown
    sorted(TARGETS)                # every name: the config schema validates against the registry itself

A registry with a `package` imports every module of that package on its first lookup, so a new module
registers itself by being there: no import list is kept by hand.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Iterator, Mapping, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no one registered; its message lists the known names (a KeyError to lookups, a ValueError to
    validators)."""

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0])


class Registry(Mapping[str, T]):
    def __init__(self, what: str, package: str | None = None, entries: Mapping[str, T] | None = None):
        self.what, self.package = what, package
        self._entries: dict[str, T] = dict(entries or {})
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: store the decorated object under `name` (each name once)."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: a module being imported may look its registry up
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{self.package}.{module.name}")

    def __getitem__(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._entries))}") from None

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {sorted(self._entries)})"
