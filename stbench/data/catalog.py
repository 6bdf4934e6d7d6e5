"""Dataset registry entries: built-in generators, preparable real datasets, and how to load either.

A ``DatasetSpec`` is either *built in* (``generate`` makes the data from a seed and size knobs, no
download) or *prepared* (``prepare`` converts files the user has into the canonical folder under the
data directory). Loading a prepared dataset that is missing fails with the exact command to prepare it.
"""
from __future__ import annotations

import inspect
import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stbench import UserError, warn
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


def size_knobs(spec: DatasetSpec) -> dict[str, inspect.Parameter] | None:
    """The size knobs a built-in generator takes (name -> parameter), or None if it takes any (**kw)."""
    try:
        params = inspect.signature(spec.generate).parameters
    except (TypeError, ValueError):   # a callable without a signature: let it check its own options
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {name: p for name, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def _knob_list(knobs: dict[str, inspect.Parameter]) -> str:
    return ", ".join(name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}"
                     for name, p in knobs.items())


def check_size_knobs(spec: DatasetSpec, options: dict) -> None:
    """Refuse knobs the generator does not take, and values whose type differs from the default's."""
    knobs = size_knobs(spec)
    if knobs is None:
        return
    unknown = sorted(set(options) - set(knobs))
    if unknown:
        example = next((f"{k}={p.default!r}" for k, p in knobs.items()
                        if k != "seed" and p.default is not inspect.Parameter.empty), "KNOB=VALUE")
        raise UserError(f"dataset {spec.name} has no size option(s) {', '.join(unknown)}: its knobs "
                        f"(with defaults) are {_knob_list(knobs)}; e.g. --size {example}")
    for name, value in options.items():
        default = knobs[name].default
        if default is inspect.Parameter.empty or default is None:
            continue
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false (True/False)"
        elif isinstance(default, int):
            ok, kind = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise UserError(f"dataset {spec.name} size option {name}={value!r} must be {kind} "
                            f"(default {default!r}), e.g. --size {name}={default!r}")


def load_dataset(name: str, data_root: str | Path | None = None, **knobs) -> STData:
    """Generate a built-in dataset, or open a prepared one from ``data_root/<name>``."""
    spec: DatasetSpec = DATASETS.get(name)
    if spec.builtin:
        check_size_knobs(spec, knobs)
        try:
            return spec.generate(**knobs)
        except MemoryError:
            given = ", ".join(f"{k}={v!r}" for k, v in knobs.items()) or "the default size"
            raise UserError(f"dataset {name} with {given} does not fit in memory: reduce the size knobs "
                            f"({', '.join(k for k in (size_knobs(spec) or knobs) if k != 'seed')})") from None
    if knobs:
        raise UserError(f"dataset {name} is prepared from files; size options {sorted(knobs)} do not apply")
    folder = data_dir(data_root) / spec.name
    if not (folder / "meta.json").exists():
        raise UserError(f"dataset {name} is not prepared in {folder.parent}: run "
                        f"`{spec.prepare_command()}` (with --data-dir {folder.parent} if not the default)")
    return STData.load(folder, prepare_command=spec.prepare_command())


def prepare_dataset(name: str, source: str | Path, data_root: str | Path | None = None) -> Path:
    spec: DatasetSpec = DATASETS.get(name)
    if spec.prepare is None:
        raise UserError(f"dataset {name} is built in and needs no preparation")
    source = Path(source)
    if not source.exists():
        raise UserError(f"source {source} does not exist; {name} expects {spec.source_hint}")
    data = spec.prepare(source)
    data.meta["name"] = spec.name
    folder = data.save(data_dir(data_root) / spec.name)
    report_masked_share(data)
    return folder


def report_masked_share(data: STData, warn_above: float = 0.5) -> float:
    """Say on stderr how many target readings losses and metrics will ignore; warn when most are."""
    share = data.masked_target_share()
    what = ("missing or 0 (mask_zeros is true)" if data.mask_zeros
            else "missing (zeros are kept: mask_zeros is false)")
    line = f"{data.name}: {share:.2%} of target readings are masked out of losses and metrics: {what}"
    if share > warn_above:
        fix = ("if 0 is a real value here, the dataset should state mask_zeros: false" if data.mask_zeros
               else "check how the source marks missing readings")
        warn(f"{line}; {fix}")
    else:
        print(f"stbench: {line}", file=sys.stderr, flush=True)
    return share
