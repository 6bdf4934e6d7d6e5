"""Dataset registry entries: built-in generators, preparable real datasets, and how to load either.

A ``DatasetSpec`` is either *built in* (``generate`` makes the data from a seed and size knobs, no
download) or *prepared* (``prepare`` converts files the user has into the canonical folder under the
data directory). Loading a prepared dataset that is missing fails with the exact command to prepare it.

A ``prepare`` function returns an ``STData`` (saved whole) or a ``StreamSource`` (written chunk by
chunk, see ``stream.py``); keyword options it declares (``target``, ``variables``, ``bbox``, ...) are
what ``stbench prepare NAME --source PATH --OPTION VALUE`` may pass it.

Prepared folders that no registration names (made by ``stbench prepare NAME --from FILE``, or copied
in) are *discovered*: any folder under the data directory whose ``meta.json`` is valid answers to its
folder name, in ``stbench run --dataset NAME`` and ``stbench list datasets``.
"""
from __future__ import annotations

import inspect
import json
import numbers
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stbench import UserError, warn
from stbench.data.core import STData, meta_problem
from stbench.registry import DATASETS

DEFAULT_DATA_DIR = "stbench-data"
DISCOVERED_FAMILY = "prepared"
EXTRA_DIRS_ENV = "STBENCH_DATA_DIRS"      # data dirs named by --data-dir, for worker processes
ADD_DATA_HINT = ("; to add your own data: `stbench prepare NAME --from values.npy|npz|csv|nc` "
                 "(then --dataset NAME), or a plugin package registering a dataset "
                 "(README: \"Plugin datasets\")")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    generate: Callable[..., STData] | None = None     # built-in: (seed=..., **size knobs) -> STData
    prepare: Callable[[Path], STData] | None = None    # real: (source path) -> STData
    source_hint: str = ""                              # what --source must point to
    defaults: dict = field(default_factory=dict)       # per-dataset protocol settings (batch size, epochs)
    command: str = ""                                  # how to rebuild it, when not `prepare --source`

    @property
    def builtin(self) -> bool:
        return self.generate is not None

    @property
    def discovered(self) -> bool:
        return self.generate is None and self.prepare is None

    def prepare_command(self) -> str:
        if self.command:
            return self.command
        return f"stbench prepare {self.name} --source {self.source_hint or 'PATH'}"


def register_dataset(spec: DatasetSpec, family: str) -> DatasetSpec:
    DATASETS.register(spec.name, family=family, description=spec.description)(spec)
    return spec


def data_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("STBENCH_DATA") or DEFAULT_DATA_DIR)


# ------------------------------------------------------------------------------------- discovery
def use_data_dir(explicit: str | Path | None) -> None:
    """Remember a --data-dir for discovery here and in worker processes started from here."""
    if not explicit:
        return
    path = str(Path(explicit).resolve())
    known = [p for p in os.environ.get(EXTRA_DIRS_ENV, "").split(os.pathsep) if p]
    if path not in known:
        os.environ[EXTRA_DIRS_ENV] = os.pathsep.join(known + [path])


def _search_dirs(explicit: str | Path | None = None) -> list[Path]:
    dirs = [data_dir(explicit)] if explicit else []
    dirs += [Path(p) for p in os.environ.get(EXTRA_DIRS_ENV, "").split(os.pathsep) if p]
    dirs.append(data_dir())
    seen, out = set(), []
    for d in dirs:
        key = os.path.abspath(d)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _prepared_meta(folder: Path) -> dict | None:
    """The meta of a prepared folder, or None when it is not one (no or invalid meta.json)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if meta_problem(meta) is not None or not (folder / "data.npy").is_file():
        return None
    return meta


def _discovered_spec(name: str, meta: dict) -> DatasetSpec:
    split = meta.get("split")
    defaults = {"split": list(split)} if isinstance(split, list) and len(split) == 3 else {}
    for key in ("batch_size", "paper_epochs"):
        if isinstance(meta.get(key), int):
            defaults[key] = meta[key]
    command = meta.get("prepare_command") if isinstance(meta.get("prepare_command"), str) else ""
    return DatasetSpec(name, str(meta.get("description") or f"prepared folder {name}"),
                       command=command or f"stbench prepare {name} --from FILE", defaults=defaults)


def _register_discovered(name: str, meta: dict) -> None:
    if name not in DATASETS._entries:      # noqa: SLF001 - registered names always win
        register_dataset(_discovered_spec(name, meta), family=DISCOVERED_FAMILY)


def discover_datasets(explicit: str | Path | None = None) -> list[str]:
    """Register every prepared folder under the data directories that no registration names."""
    found = []
    for root in _search_dirs(explicit):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            name = folder.name
            if not folder.is_dir() or not NAME_PATTERN.match(name) or name in DATASETS._entries:  # noqa: SLF001
                continue
            meta = _prepared_meta(folder)
            if meta is not None:
                _register_discovered(name, meta)
                found.append(name)
    return found


def _resolve(key: str) -> None:
    """Registry hook: an unknown dataset name may be a prepared folder under a data directory."""
    if not NAME_PATTERN.match(key):
        return
    for root in _search_dirs():
        meta = _prepared_meta(root / key)
        if meta is not None:
            _register_discovered(key, meta)
            return


DATASETS.resolver = _resolve
DATASETS.hint = ADD_DATA_HINT


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


def prepare_options(spec: DatasetSpec) -> dict[str, inspect.Parameter]:
    """The keyword options a dataset's ``prepare`` accepts (beyond the source path)."""
    func = spec.prepare
    bound = set(func.keywords) if hasattr(func, "keywords") else set()
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    return {name: p for i, (name, p) in enumerate(params.items())
            if i > 0 and name not in bound and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                          inspect.Parameter.KEYWORD_ONLY)}


def prepare_dataset(name: str, source: str | Path, data_root: str | Path | None = None, **options) -> Path:
    """Convert the files at ``source`` into ``data_root/<name>``; ``options`` go to the dataset's reader
    (``stbench prepare NAME --source PATH --target ...``), refused with a one-line error if it takes none."""
    from stbench.data.stream import StreamSource, report_share, write_source

    spec: DatasetSpec = DATASETS.get(name)
    if spec.prepare is None:
        if spec.discovered:
            raise UserError(f"dataset {name} is a prepared folder made from files: rebuild it with "
                            f"`{spec.prepare_command()}`")
        raise UserError(f"dataset {name} is built in and needs no preparation (to write a large one to disk "
                        f"chunk by chunk: `stbench prepare NEWNAME --synthetic {name} --size KNOB=VALUE`)")
    options = {k: v for k, v in options.items() if v is not None}
    accepted = prepare_options(spec)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        takes = ", ".join("--" + k.replace("_", "-") for k in accepted) or "no options"
        raise UserError(f"{flags} do(es) not apply to dataset {name} (it takes {takes})")
    source = Path(source)
    if not source.exists():
        raise UserError(f"source {source} does not exist; {name} expects {spec.source_hint}")
    data = spec.prepare(source, **options)
    folder = data_dir(data_root) / spec.name
    if isinstance(data, StreamSource):
        folder, stats = write_source(data, folder)
        report_share(spec.name, stats["masked_share"], stats["meta"]["mask_zeros"])
        return folder
    data.meta["name"] = spec.name
    folder = data.save(folder)
    report_masked_share(data)
    return folder


def prepare_from(name: str, files, data_root: str | Path | None = None, *, mask_zeros=None,
                 **options) -> Path:
    """``stbench prepare NAME --from FILES``: any array or table into ``data_root/NAME`` (discovered
    afterwards by name). ``options``: adj, coords, timestamps, freq, target, variables (see formats.py)."""
    from stbench.data.formats import command_line, from_files, parse_mask_zeros
    from stbench.data.stream import report_share, write_source
    from stbench.registry import UnknownName

    key = name.strip()
    if not NAME_PATTERN.match(key):
        raise UserError(f"dataset name {name!r} must be lower-case letters, digits, '.', '-' or '_' (at most "
                        "64, starting with a letter or digit): it names the folder under --data-dir")
    try:
        spec = DATASETS.get(key)
    except UnknownName:
        spec = None
    if spec is not None and not spec.discovered:
        how = "built in" if spec.builtin else f"prepared with `{spec.prepare_command()}`"
        raise UserError(f"{key} is a registered dataset ({how}): choose another NAME for --from")
    flag = parse_mask_zeros(mask_zeros)
    options = {k: v for k, v in options.items() if v is not None}
    command = command_line(key, files, **options,
                           mask_zeros=None if flag is None else ("yes" if flag else "no"))
    source = from_files(files, command=command, **options)
    hint = f"; e.g. `{command} --mask-zeros no`" if flag is None else ""
    folder, stats = write_source(source, data_dir(data_root) / key, mask_zeros=flag, zero_hint=hint)
    report_share(key, stats["masked_share"], stats["meta"]["mask_zeros"])
    if key not in DATASETS._entries:        # noqa: SLF001
        _register_discovered(key, stats["meta"])
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
