"""Dataset registry entries: built-in generators, preparable real datasets, and how to load either.

A ``DatasetSpec`` is either *built in* (``generate`` makes the data from a seed and size knobs, no
download) or *prepared* (``prepare`` converts files the user has into the canonical folder under the
data directory). Loading a prepared dataset that is missing fails with the exact command to prepare it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stbench import UserError
from stbench.data.core import STData
from stbench.registry import DATASETS

DEFAULT_DATA_DIR = "stbench-data"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    generate: Callable[..., STData] | None = None     # built-in: (seed=..., **size knobs) -> STData
    prepare: Callable[[Path], STData] | None = None    # real: (source path) -> STData
    source_hint: str = ""                              # what --source must point to
    defaults: dict = field(default_factory=dict)       # per-dataset protocol settings (batch size, epochs)

    @property
    def builtin(self) -> bool:
        return self.generate is not None

    def prepare_command(self) -> str:
        return f"stbench prepare {self.name} --source {self.source_hint or 'PATH'}"


def register_dataset(spec: DatasetSpec, family: str) -> DatasetSpec:
    DATASETS.register(spec.name, family=family, description=spec.description)(spec)
    return spec


def data_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("STBENCH_DATA") or DEFAULT_DATA_DIR)


def load_dataset(name: str, data_root: str | Path | None = None, **knobs) -> STData:
    """Generate a built-in dataset, or open a prepared one from ``data_root/<name>``."""
    spec: DatasetSpec = DATASETS.get(name)
    if spec.builtin:
        return spec.generate(**knobs)
    if knobs:
        raise UserError(f"dataset {name} is prepared from files; size options {sorted(knobs)} do not apply")
    folder = data_dir(data_root) / spec.name
    if not (folder / "meta.json").exists():
        raise UserError(f"dataset {name} is not prepared in {folder.parent}: run "
                        f"`{spec.prepare_command()}` (with --data-dir {folder.parent} if not the default)")
    return STData.load(folder)


def prepare_dataset(name: str, source: str | Path, data_root: str | Path | None = None) -> Path:
    spec: DatasetSpec = DATASETS.get(name)
    if spec.prepare is None:
        raise UserError(f"dataset {name} is built in and needs no preparation")
    source = Path(source)
    if not source.exists():
        raise UserError(f"source {source} does not exist; {name} expects {spec.source_hint}")
    data = spec.prepare(source)
    data.meta["name"] = spec.name
    return data.save(data_dir(data_root) / spec.name)
