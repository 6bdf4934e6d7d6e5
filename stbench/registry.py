"""One small registry for methods, datasets and models.

A registry maps a lower-case name to an object (a class or a factory) plus free-form info such as the
method family. Built-in entries register themselves on import; third-party packages plug in through
the entry-point groups ``stbench.methods``, ``stbench.datasets`` and ``stbench.models``.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable


class UnknownName(KeyError):
    """A name that no registry entry answers to; the message lists what exists."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any
    family: str
    info: dict = field(default_factory=dict)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False
        self.hint = ""          # appended to the unknown-name error (e.g. how to add one)
        self.resolver: Callable[[str], Any] | None = None   # on a miss: may register the name (discovery)

    def register(self, name: str, *, family: str = "", **info) -> Callable[[Any], Any]:
        """Decorator: ``@METHODS.register("kcenter", family="coreset")``."""
        key = name.lower()

        def decorate(obj):
            if key in self._entries:
                raise ValueError(f"duplicate {self.kind} name {key!r}")
            self._entries[key] = Entry(key, obj, family, dict(info))
            return obj

        return decorate

    def entry(self, name: str) -> Entry:
        self.load_plugins()
        key = name.strip().lower()
        if key not in self._entries and self.resolver is not None:
            self.resolver(key)
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownName(
                f"unknown {self.kind[:-1]} {name!r}{hint} (see `stbench list {self.kind}`){self.hint}"
            )
        return self._entries[key]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def names(self) -> list[str]:
        self.load_plugins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def families(self) -> set[str]:
        return {e.family for e in self.entries() if e.family}

    def select(self, spec: str) -> list[str]:
        """Names for ``all``, a family name, or a comma-separated list of names and families."""
        self.load_plugins()
        chosen: list[str] = []
        for part in (p.strip().lower() for p in spec.split(",")):
            if not part:
                continue
            if part == "all":
                found = self.names()
            elif part in self._entries:
                found = [part]
            elif part in self.families():
                found = [e.name for e in self.entries() if e.family == part]
            else:
                self.entry(part)  # raises UnknownName with suggestions
                found = []
            chosen += [n for n in found if n not in chosen]
        if not chosen:
            raise UnknownName(f"no {self.kind} selected by {spec!r}")
        return chosen

    def load_plugins(self) -> None:
        """Import third-party entries from the entry-point group ``stbench.<kind>`` once."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=f"stbench.{self.kind}"):
            ep.load()  # importing the module runs its @register decorators


METHODS = Registry("methods")
DATASETS = Registry("datasets")
MODELS = Registry("models")
