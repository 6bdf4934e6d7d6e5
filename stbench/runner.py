"""The driver: plan a grid into cells, run them with an executor, write one record per cell.

Planning expands the command line (datasets x methods x budgets x seeds x evaluation seeds x
models) into ``CellSpec``s (``stbench.cell``), checks everything that can be checked before compute,
and skips cells the store has finished. Each remaining cell is claimed in the store (so concurrent drivers on
one results folder never run a cell twice), run by the executor (``stbench.executors``: serial,
local processes or Ray), and its record appended as it arrives. A failing cell is recorded and the
grid goes on.

Seeds. ``seeds`` are condensation seeds, ``eval_seeds`` (default: none, each cell evaluates with its
own seed) evaluation seeds. A static method gets one cell per (seed, eval seed): its set is condensed
once per seed (the artifact key holds the seed, not the eval seed) and every eval seed trains and tests
a fresh evaluation model on it. Pruners and ``full`` condense nothing: the pruner's draws, the model's
initialisation and the batch order are one stream, seeded by the eval seed alone, so they get one
cell per eval seed with ``seed = eval_seed`` (the very run, and run id, of ``--seeds E`` without
``--eval-seeds``); ``seeds`` does not multiply them. The config (so the run id) holds ``eval_seed``
only where it differs from ``seed``, ``eval_lr_grid`` only when a grid is given and ``targets`` only
when it is ``hard``: without the new options every run id is what it was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import typing
from dataclasses import dataclass, field

import torch

from stbench import UserError, warn
from stbench.budgets import Compression, Retention
from stbench.cell import CellSpec, workspace
from stbench.data.windows import WindowSpec
from stbench.measure import setup_process
from stbench.plugins import load_builtin
from stbench.presets import train_config
from stbench.protocols import Method
from stbench.registry import DATASETS, METHODS, MODELS
from stbench.results import FINISHED, STATUSES, ClaimKeeper, ResultStore
from stbench.train import NEW_TRAIN_FIELDS

TARGETS = ("as-condensed", "hard")


@dataclass
class Grid:
    methods: str = "full,random"
    dataset: str = "synthetic-weather"                    # one name or several, comma-separated
    budgets: list = field(default_factory=lambda: [Compression(0.005)])
    retentions: list = field(default_factory=lambda: [Retention(0.3)])
    seeds: list = field(default_factory=lambda: [0])
    model: str = "auto"                                   # auto, one model or several, comma-separated
    preset: str = "smoke"
    device: str = "auto"
    data_dir: str | None = None
    results: str = "results"
    params: dict = field(default_factory=dict)            # "param" or "method.param" -> value
    dataset_options: dict = field(default_factory=dict)   # size knobs of built-in datasets
    train_overrides: dict = field(default_factory=dict)   # e.g. {"epochs": 5}
    window: WindowSpec = field(default_factory=WindowSpec)
    retry: tuple = ()                                     # finished statuses to run again, e.g. ("oom",)
    eval_seeds: list | None = None                        # evaluation seeds; None: each cell's own seed
    eval_lr_grid: list | None = None                      # evaluation learning rates chosen on validation
    targets: str = "as-condensed"                         # as-condensed | hard (real targets where defined)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def make_method(name: str, params: dict) -> Method:
    cls = METHODS.get(name)
    hints = typing.get_type_hints(cls.Params)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls.Params)}
    chosen = {}
    for key, value in params.items():
        target, _, param = key.rpartition(".")
        if target and target != name:
            continue
        if param in fields:
            chosen[param] = _as_declared(f"{name}.{param}", fields[param], value)
        elif target == name:
            raise UserError(f"method {name} has no parameter {param!r}; it has: {', '.join(sorted(fields)) or 'none'}")
    try:
        return cls.make(chosen)
    except ValueError as err:   # a Params.__post_init__ range check
        raise UserError(f"method {name}: {err}") from None


def _as_declared(param: str, declared, value):
    """A ``--set`` value as its parameter's declared type: ``false``/``true`` (which reach here as
    strings) become booleans, ints become floats where a float is declared, and anything else that
    does not fit is refused instead of silently changing the method's behaviour."""
    kinds = typing.get_args(declared) or (declared,)  # float | None -> (float, NoneType)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is None and type(None) in kinds:
        return None
    if bool in kinds and str(value).lower() in ("true", "false", "1", "0"):
        return str(value).lower() in ("true", "1")
    if int in kinds and numeric and float(value).is_integer():
        return int(value)
    if float in kinds and numeric:
        return float(value)
    if str in kinds:
        return str(value)
    expected = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
    raise UserError(f"--set {param}={value!r}: {param} takes {expected}; give a value of that type")


class Runner:
    def __init__(self, grid: Grid, progress=None):
        load_builtin()
        self.grid, self.progress = grid, progress
        self.device = resolve_device(grid.device)
        setup_process()
        self.store = ResultStore(grid.results)
        self.datasets = [DATASETS.entry(name).name for name in _names(grid.dataset, "--dataset")]
        self.models = _names(grid.model, "--model")
        for model in self.models:
            if model != "auto":
                MODELS.get(model)
        _check_seeds(grid.seeds)
        if grid.eval_seeds is not None:
            _check_seeds(grid.eval_seeds, "--eval-seeds")
        self.lr_grid = _lr_grid(grid.eval_lr_grid)
        if grid.targets not in TARGETS:
            raise UserError(f"--targets {grid.targets!r}: choose one of {', '.join(TARGETS)}")
        unknown_retry = set(grid.retry) - set(FINISHED)
        if unknown_retry:
            raise UserError(f"--retry {','.join(sorted(unknown_retry))}: only finished statuses "
                            f"({', '.join(FINISHED)}) can be retried; failed cells are always retried")
        self.method_names = METHODS.select(grid.methods)
        self.methods = {name: make_method(name, grid.params) for name in self.method_names}
        followed = _bind_followed(self.methods, grid.params)
        _check_params(grid.params, self.method_names, followed)
        train_config(grid.preset, {}, grid.train_overrides)   # an unknown preset fails here, before any data
        self.store.check_writable()   # before any compute
        self.counts: dict[str, int] = {}

    # -- planning -------------------------------------------------------------------------------
    def plan(self, device: torch.device | None = None) -> list[CellSpec]:
        """Every cell of the grid, loading each dataset once (on ``device``) to check and identify it."""
        specs, cells = [], self._cells()
        for dataset in self.datasets:
            spec = DATASETS.get(dataset)
            window = self.grid.window
            if "split" in spec.defaults:
                window = dataclasses.replace(window, split=tuple(spec.defaults["split"]))
            window_dict = json.loads(_json(dataclasses.asdict(window)))   # JSON-native, as a spec travels
            options = self._dataset_options(dataset)
            ws = workspace(dataset, _json(options), self.grid.data_dir, _json(window_dict), str(device or self.device))
            train = dataclasses.asdict(train_config(self.grid.preset, spec.defaults, self.grid.train_overrides))
            train = {k: v for k, v in train.items() if NEW_TRAIN_FIELDS.get(k, object()) != v}
            self._check_cells(cells, len(ws.train), ws.series.num_locations)
            data = ws.series.data
            self._say(f"{dataset}: {data.shape[0]} steps x {data.shape[1]} locations x {data.shape[2]} channels; "
                      f"{100 * ws.series.masked_target_share:.1f}% of target readings masked (missing"
                      f"{' or zero: zeros count as missing' if ws.series.mask_zeros else '; zeros are values'})")
            for name, budget, seed, eval_seed, model in cells:
                config = {
                    "dataset": dataset, "dataset_sha256": ws.data_sha, "dataset_options": options,
                    "window": window_dict, "method": name, "method_params": self.methods[name].param_dict(),
                    "budget": None if budget is None else budget.to_dict(), "seed": seed, "model": model,
                    "preset": self.grid.preset, "train": train, "device": self.device.type,
                }
                # the new protocol keys only where they change the run, so earlier run ids stay valid
                if eval_seed != seed:
                    config["eval_seed"] = eval_seed
                if self.lr_grid is not None:
                    config["eval_lr_grid"] = self.lr_grid
                if self.grid.targets != "as-condensed":
                    config["targets"] = self.grid.targets
                specs.append(CellSpec(config, self.grid.results, self.grid.data_dir, str(self.device)))
        return specs

    def _dataset_options(self, dataset: str) -> dict:
        """Size knobs for ``dataset``: ``KNOB=V`` applies to every dataset, ``DATASET.KNOB=V`` to one."""
        options = {}
        for key, value in self.grid.dataset_options.items():
            target, _, knob = key.rpartition(".")
            if target and target.lower() not in self.datasets:
                raise UserError(f"--size {key}: dataset {target} is not in --dataset; drop it or add the dataset")
            if not target or target.lower() == dataset:
                options[knob] = value
        return options

    def _cells(self) -> list[tuple]:
        """(method, budget, seed, eval seed, model) in grid order; ``auto`` picks mtgnn-le for
        bi-dimensional sets. Static methods: every (seed, eval seed); pruners and ``full``: one cell per
        eval seed, with seed = eval seed (they condense nothing; see the module docstring)."""
        cells = []
        for name, method in self.methods.items():
            budgets = {"static": self.grid.budgets, "dynamic": self.grid.retentions, "full": [None]}[method.kind]
            if self.grid.eval_seeds is None:
                seeds = [(seed, seed) for seed in self.grid.seeds]
            elif method.kind == "static":
                seeds = [(seed, e) for seed in self.grid.seeds for e in self.grid.eval_seeds]
            else:
                seeds = [(e, e) for e in self.grid.eval_seeds]
            for budget in budgets:
                for seed, eval_seed in seeds:
                    for model in self.models:
                        if model == "auto":
                            bidim = budget is not None and method.is_bidimensional(budget)
                            model = "mtgnn-le" if bidim else "mtgnn"
                        if (name, budget, seed, eval_seed, model) not in cells:
                            cells.append((name, budget, seed, eval_seed, model))
        return cells

    def _check_cells(self, cells, num_windows: int, num_locations: int) -> None:
        """Before anything runs: refuse parameters the data cannot honour and budgets that keep less
        than one window or location; warn about budgets that keep almost nothing."""
        for name, method in self.methods.items():
            try:
                method.check(num_windows, num_locations)
            except ValueError as err:
                raise UserError(f"method {name}: {err}") from None
        tiny = set()
        for name, budget, *_ in cells:
            method = self.methods[name]
            if isinstance(budget, Compression):
                bidim = method.is_bidimensional(budget)
                m, n = budget.sizes(num_windows, num_locations, bidim)
                if m < 3 or (bidim and n < 2):
                    tiny.add(f"{budget.label} keeps {m} window(s)" + (f" x {n} location(s)" if bidim else ""))
            elif isinstance(budget, Retention) and round(budget.ratio * num_windows) < 1:
                raise UserError(f"retention {budget.ratio:g} of {num_windows} windows keeps none; raise it")
        for text in sorted(tiny):
            warn(f"budget {text} of {num_windows} windows x {num_locations} locations: methods will "
                 "differ by chance more than by design; use a larger budget or dataset")

    # -- running --------------------------------------------------------------------------------
    def run(self, executor=None) -> list[dict]:
        """Run every unfinished cell with ``executor`` (default: serial, here); records in grid order."""
        from stbench.executors import SerialExecutor

        executor = executor or SerialExecutor(progress=self.progress)
        in_process = isinstance(executor, SerialExecutor) and not executor.cell_timeout
        specs = self.plan(None if in_process else torch.device("cpu"))
        existing = {r["run_id"]: r for r in self.store.records()}
        self.counts = {status: 0 for status in (*STATUSES, "skipped", "elsewhere")}
        todo = []
        for i, spec in enumerate(specs):
            done = existing.get(spec.run_id, {}).get("status")
            if done in FINISHED and done not in self.grid.retry:
                self._say(f"[{i + 1}/{len(specs)}] {spec.label}: done before ({done}), skipped")
                self.counts["skipped"] += 1
                self.counts[f"skipped {done}"] = self.counts.get(f"skipped {done}", 0) + 1
            else:
                todo.append(spec)
        results = {rid: rec for rid, rec in existing.items()}
        keeper, display = ClaimKeeper(self.store), _Display(len(todo), self.progress)

        def on_start(spec: CellSpec) -> bool:
            if not keeper.take(spec.run_id):
                self.counts["elsewhere"] += 1
                display.say(f"{spec.label}: being run by another process, left to it")
                return False
            latest = self.store.latest(spec.run_id)
            if latest is not None and latest != existing.get(spec.run_id) and latest["status"] in FINISHED:
                keeper.release(spec.run_id)         # another process finished it meanwhile
                self.counts["skipped"] += 1
                results[spec.run_id] = latest
                return False
            display.start(spec)
            return True

        def on_done(spec: CellSpec, record: dict) -> None:
            try:
                self.store.append(record)
            finally:
                keeper.release(spec.run_id)
            results[spec.run_id] = record
            self.counts[record["status"]] += 1
            display.done(spec, record)

        try:
            executor.run(todo, on_start, on_done)
        finally:
            keeper.close()
            display.close()
        if self.counts["elsewhere"]:
            results.update({r["run_id"]: r for r in self.store.records()})
        return [results[s.run_id] for s in specs if s.run_id in results]

    def summary(self) -> str:
        """One line: what this invocation ran, by status, and what it skipped."""
        ran = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES[:4])
        ran += "".join(f", {self.counts[s]} {s}" for s in STATUSES[4:] if self.counts.get(s))
        line = f"stbench: {ran}; {self.counts.get('skipped', 0)} done before, skipped"
        if self.counts.get("skipped oom"):
            line += f" (of them {self.counts['skipped oom']} oom: run again with --retry oom)"
        if self.counts.get("elsewhere"):
            line += f"; {self.counts['elsewhere']} being run by another process"
        return line

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)


class _Display:
    """Progress of the grid: a live bar on a terminal (tqdm), plain lines otherwise (logs)."""

    def __init__(self, total: int, say):
        self.say_line, self.total, self.started, self.running, self.failed = say, total, 0, 0, 0
        self.t0 = time.monotonic()
        self.bar = None
        if say is not None and sys.stderr.isatty() and total > 1:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.say_line:
            self.say_line(text)

    def start(self, spec: CellSpec) -> None:
        self.started += 1
        self.running += 1
        self._postfix()
        self.say(f"[{self.started}/{self.total}] {spec.label} ...")

    def done(self, spec: CellSpec, record: dict) -> None:
        self.running -= 1
        self.failed += record["status"] in ("failed", "crashed", "timeout")
        if record.get("error"):
            text = f"    {spec.label}: {record['status']}: {record['error']}"
        else:
            test = record["metrics"]["test"]
            text = (f"    {spec.label}: ok  test rel_mae {test['rel_mae']:.4f} rel_rmse {test['rel_rmse']:.4f}  "
                    f"({record['time_s']['total']:.1f}s)")
        self.say(text)
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(running=self.running, failed=self.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _check_seeds(seeds: list, flag: str = "--seeds") -> None:
    if not seeds:
        raise UserError(f"no seeds given; pass {flag} 0 or a comma-separated list such as 0,1,2")
    bad = [s for s in seeds if not isinstance(s, int) or isinstance(s, bool) or s < 0]
    if bad:
        raise UserError(f"seeds must be integers >= 0 (got {bad}); pass e.g. {flag} 0,1,2")


def _lr_grid(grid: list | None) -> list[float] | None:
    """The evaluation learning-rate grid, checked and canonical (distinct, largest first), or None."""
    if grid is None:
        return None
    if not grid:
        raise UserError("--eval-lr-grid names no learning rate; give e.g. 1e-2,1e-3,1e-4")
    bad = [v for v in grid if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
           or v <= 0]
    if bad:
        raise UserError(f"--eval-lr-grid: learning rates must be positive numbers (got {bad})")
    return sorted({float(v) for v in grid}, reverse=True)


def _bind_followed(methods: dict[str, Method], params: dict) -> set[str]:
    """Controls that mirror another method (``method.follows()``: its name, e.g. relabelled-random of
    condtsf) get that method's parameters as this grid resolves them (``method.bind``), so both use
    the same experts and settings; returns the followed names (their ``--set`` keys are accepted)."""
    followed = set()
    for method in methods.values():
        follows = getattr(method, "follows", None)
        if follows is not None:
            name = follows()
            method.bind(make_method(name, params).param_dict())
            followed.add(name)
    return followed


def _check_params(params: dict, names: list[str], followed: set[str] = frozenset()) -> None:
    """Every ``--set`` key must reach a selected method (or one a selected control follows): a typo
    never passes silently."""
    accepted = {name: {f.name for f in dataclasses.fields(METHODS.get(name).Params)}
                for name in (*names, *followed)}
    for key in params:
        target, _, param = key.rpartition(".")
        if target:
            if target.lower() not in accepted:
                METHODS.entry(target)   # an unknown method: raises with suggestions
                raise UserError(f"--set {key}: method {target} is not selected by --methods; add it or drop the --set")
        elif not any(param in fields for fields in accepted.values()):
            raise UserError(f"--set {key}: no selected method has a parameter {param!r}; see "
                            "`stbench list methods` (or use METHOD.PARAM)")


def _names(text: str, flag: str) -> list[str]:
    names = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    if not names:
        raise UserError(f"{flag} names nothing; give a name (see `stbench list`)")
    return list(dict.fromkeys(names))


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)
