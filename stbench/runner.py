"""Run a grid of (method, budget, seed) cells on one dataset and one evaluation model.

For every cell: condense (static methods) or start the pruner (dynamic methods), train the evaluation
model through the one trainer, test the best-validation checkpoint on the full original test split,
and append one record to the results store. A failing cell is recorded and the grid goes on.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import platform
import subprocess
import sys
import time
import traceback
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import stbench
from stbench import UserError, warn
from stbench.budgets import Compression, Retention
from stbench.data.catalog import DatasetSpec, load_dataset
from stbench.data.core import array_sha256
from stbench.data.windows import Series, WindowSpec
from stbench.measure import Meter, setup_process
from stbench.plugins import load_builtin
from stbench.presets import train_config
from stbench.protocols import CondensedSet, Method, RunContext
from stbench.registry import DATASETS, METHODS, MODELS
from stbench.results import FINISHED, STATUSES, ResultStore, run_id
from stbench.sources import RealSource
from stbench.train import TrainConfig, fit


@dataclass
class Grid:
    methods: str = "full,random"
    dataset: str = "synthetic-weather"
    budgets: list = field(default_factory=lambda: [Compression(0.005)])
    retentions: list = field(default_factory=lambda: [Retention(0.3)])
    seeds: list = field(default_factory=lambda: [0])
    model: str = "auto"
    preset: str = "smoke"
    device: str = "auto"
    data_dir: str | None = None
    results: str = "results"
    params: dict = field(default_factory=dict)            # "param" or "method.param" -> value
    dataset_options: dict = field(default_factory=dict)   # size knobs of built-in datasets
    train_overrides: dict = field(default_factory=dict)   # e.g. {"epochs": 5}
    window: WindowSpec = field(default_factory=WindowSpec)
    retry: tuple = ()                                     # finished statuses to run again, e.g. ("oom",)


@dataclass
class Cell:
    method_name: str
    method: Method
    budget: Compression | Retention | None
    seed: int
    model: str

    @property
    def label(self) -> str:
        budget = self.budget.label if self.budget is not None else "-"
        return f"{self.method_name} {budget} seed={self.seed} model={self.model}"


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


@functools.cache
def source_commit() -> str | None:
    """The git commit of the code running ("...+dirty" with uncommitted source edits); None outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(stbench.__file__).parent, capture_output=True,
                              text=True, timeout=10, check=False)
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ":/stbench", ":/baselines",
                    ":/methods").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def versions(device: torch.device) -> dict:
    info = {"stbench": stbench.__version__, "commit": source_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "host": platform.node(),
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device))
    return info


class Runner:
    def __init__(self, grid: Grid, progress=None):
        load_builtin()
        self.grid, self.progress = grid, progress
        self.device = resolve_device(grid.device)
        setup_process()
        self.store = ResultStore(grid.results)
        self.spec: DatasetSpec = DATASETS.get(grid.dataset)
        _check_seeds(grid.seeds)
        unknown_retry = set(grid.retry) - set(FINISHED)
        if unknown_retry:
            raise UserError(f"--retry {','.join(sorted(unknown_retry))}: only finished statuses "
                            f"({', '.join(FINISHED)}) can be retried; failed cells are always retried")
        if "split" in self.spec.defaults:
            grid.window = dataclasses.replace(grid.window, split=tuple(self.spec.defaults["split"]))
        self.cells = self._cells()
        self.store.check_writable()   # before any compute
        self.counts: dict[str, int] = {}

    # -- grid -----------------------------------------------------------------------------------
    def _cells(self) -> list[Cell]:
        names = METHODS.select(self.grid.methods)
        if self.grid.model != "auto":
            MODELS.get(self.grid.model)
        _check_params(self.grid.params, names)
        cells = []
        for name in names:
            method = make_method(name, self.grid.params)
            budgets = {"static": self.grid.budgets, "dynamic": self.grid.retentions, "full": [None]}[method.kind]
            for budget in budgets:
                model = self.grid.model
                if model == "auto":
                    model = "mtgnn-le" if budget is not None and method.is_bidimensional(budget) else "mtgnn"
                cells += [Cell(name, method, budget, seed, model) for seed in self.grid.seeds]
        return cells

    def _check_cells(self, num_windows: int, num_locations: int) -> None:
        """Before anything runs: refuse parameters the data cannot honour and budgets that keep less
        than one window or location; warn about budgets that keep almost nothing."""
        tiny = set()
        for cell in self.cells:
            try:
                cell.method.check(num_windows, num_locations)
            except ValueError as err:
                raise UserError(f"method {cell.method_name}: {err}") from None
            if isinstance(cell.budget, Compression):
                bidim = cell.method.is_bidimensional(cell.budget)
                m, n = cell.budget.sizes(num_windows, num_locations, bidim)
                if m < 3 or (bidim and n < 2):
                    tiny.add(f"{cell.budget.label} keeps {m} window(s)" + (f" x {n} location(s)" if bidim else ""))
            elif isinstance(cell.budget, Retention) and round(cell.budget.ratio * num_windows) < 1:
                raise UserError(f"retention {cell.budget.ratio:g} of {num_windows} windows keeps none; raise it")
        for text in sorted(tiny):
            warn(f"budget {text} of {num_windows} windows x {num_locations} locations: methods will "
                 "differ by chance more than by design; use a larger budget or dataset")

    # -- running --------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        meter = Meter(self.device)
        with meter.phase("prepare"):
            data = load_dataset(self.grid.dataset, self.grid.data_dir, **self.grid.dataset_options)
            self.series = Series(data, self.grid.window, self.device)
            self.train, self.val, self.test = (self.series.split(s) for s in ("train", "val", "test"))
            self.eval_loc_input = self.train.location_input()
        self.prepare_cost = (meter.time_s["prepare"], meter.rss_peak["prepare"], meter.cuda_peak.get("prepare", 0))
        self.data_sha = data.meta.get("data_sha256") or array_sha256(np.asarray(data.values))
        self.masked_share = getattr(self.series, "masked_target_share", float("nan"))  # TEMP
        self._say(f"{self.grid.dataset}: {data.shape[0]} steps x {data.shape[1]} locations x {data.shape[2]} "
                  f"channels; {100 * self.masked_share:.1f}% of target readings masked "
                  f"({'missing or zero' if self.series.mask_zeros else 'missing'}; zeros "
                  f"{'are' if self.series.mask_zeros else 'are not'} treated as missing)")
        self._check_cells(len(self.train), self.series.num_locations)
        existing = {r["run_id"]: r for r in self.store.records()}
        records = []
        self.counts = {status: 0 for status in (*STATUSES, "skipped")}
        for i, cell in enumerate(self.cells):
            config = self._config(cell)
            rid = run_id(config)
            done = existing.get(rid, {}).get("status")
            if done in FINISHED and done not in self.grid.retry:
                self._say(f"[{i + 1}/{len(self.cells)}] {cell.label}: done before ({done}), skipped")
                self.counts["skipped"] += 1
                self.counts[f"skipped {done}"] = self.counts.get(f"skipped {done}", 0) + 1
                records.append(existing[rid])
                continue
            self._say(f"[{i + 1}/{len(self.cells)}] {cell.label} ...")
            record = self._run_cell(cell, config, rid)
            self.store.append(record)
            records.append(record)
            self.counts[record["status"]] += 1
            self._say(f"    {record['status']}" + (f": {record['error']}" if record.get("error") else
                      f"  test rel_mae {record['metrics']['test']['rel_mae']:.4f} "
                      f"rel_rmse {record['metrics']['test']['rel_rmse']:.4f}  ({record['time_s']['total']:.1f}s)"))
        return records

    def summary(self) -> str:
        """One line: what this invocation ran, by status, and what it skipped."""
        ran = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in STATUSES)
        line = f"stbench: {ran}; {self.counts.get('skipped', 0)} done before, skipped"
        if self.counts.get("skipped oom"):
            line += f" (of them {self.counts['skipped oom']} oom: run again with --retry oom)"
        return line

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def _config(self, cell: Cell) -> dict:
        cfg = train_config(self.grid.preset, self.spec.defaults, self.grid.train_overrides)
        return {
            "dataset": self.grid.dataset, "dataset_sha256": self.data_sha,
            "dataset_options": self.grid.dataset_options, "window": dataclasses.asdict(self.grid.window),
            "method": cell.method_name, "method_params": cell.method.param_dict(),
            "budget": None if cell.budget is None else cell.budget.to_dict(), "seed": cell.seed,
            "model": cell.model, "preset": self.grid.preset, "train": dataclasses.asdict(cfg),
            "device": self.device.type,
        }

    def _context(self, cell: Cell, meter: Meter) -> RunContext:
        _seed_evaluation(None, cell.seed)
        return RunContext(
            seed=cell.seed, device=self.device, rng=np.random.default_rng(cell.seed),
            torch_generator=torch.Generator().manual_seed(cell.seed), meter=meter, preset=self.grid.preset,
            series=self.series, model_factory=self._model_factory(cell.model),
            dataset_defaults=dict(self.spec.defaults),
        )

    def _model_factory(self, name: str):
        spec, series = self.grid.window, self.series

        def build(num_locations: int, model_name: str | None = None, in_channels: int | None = None):
            cls = MODELS.get(model_name or name)
            extra = {}
            if getattr(cls, "uses_adjacency", False) and series.data.adj is not None \
                    and num_locations == series.num_locations:   # e.g. Graph WaveNet's transition supports
                extra["adjacency"] = series.data.adj
            return cls(num_locations, in_channels or series.num_channels, len(series.data.targets),
                       spec.input_len, spec.output_len, **extra).to(self.device)
        return build

    def _eval_splits(self, input_channels: list[int] | None):
        """Train/val/test windows and the evaluation encoder input, for a subset of input channels."""
        if input_channels is None:
            return self.train, self.val, self.test, self.eval_loc_input
        series = self.series.with_inputs(input_channels)
        train = series.split("train")
        return train, series.split("val"), series.split("test"), train.location_input()

    def _run_cell(self, cell: Cell, config: dict, rid: str) -> dict:
        meter = Meter(self.device)
        meter.time_s["prepare"], meter.rss_peak["prepare"], cuda_prepare = self.prepare_cost
        if self.device.type == "cuda":
            meter.cuda_peak["prepare"] = cuda_prepare
        record = self._base_record(cell, config, rid)
        started = time.perf_counter()
        try:
            self._execute(cell, config, meter, record)
            record["status"] = "ok"
        except Incompatible as err:
            record.update(status="incompatible", error=str(err))
        except Diverged as err:
            record.update(status="failed", error=str(err))
        except (torch.cuda.OutOfMemoryError, MemoryError) as err:
            record.update(status="oom", error=f"{type(err).__name__}: {err}".splitlines()[0])
        except Exception as err:  # one failing cell never stops the grid
            oom = "out of memory" in str(err).lower() or "can't allocate memory" in str(err).lower()
            record.update(status="oom" if oom else "failed", error=f"{type(err).__name__}: {err}".splitlines()[0],
                          traceback=traceback.format_exc())
        finally:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        record["time_s"] = dict(meter.time_s, total=time.perf_counter() - started)
        record["peak_rss_bytes"] = dict(meter.rss_peak)
        record["peak_cuda_bytes"] = dict(meter.cuda_peak)
        record["rss_peak_is_process"] = meter.rss_peak_is_process
        record["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
        return record

    def _base_record(self, cell: Cell, config: dict, rid: str) -> dict:
        data = self.series.data
        return {
            "run_id": rid, "status": "running", "error": None,
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "dataset": self.grid.dataset, "dataset_sha256": self.data_sha, "dataset_shape": list(data.shape),
            "mask_zeros": self.series.mask_zeros, "masked_target_share": self.masked_share,
            "split_windows": {k: len(v) for k, v in self.series.starts.items()},
            "method": cell.method_name, "family": METHODS.entry(cell.method_name).family,
            "method_kind": cell.method.kind, "method_params": cell.method.param_dict(),
            "budget": config["budget"], "budget_label": cell.budget.label if cell.budget else "full",
            "seed": cell.seed, "model": cell.model, "preset": self.grid.preset, "train_config": config["train"],
            "device": str(self.device), "versions": versions(self.device),
        }

    def _execute(self, cell: Cell, config: dict, meter: Meter, record: dict) -> None:
        ctx = self._context(cell, meter)
        cfg = TrainConfig(**config["train"])  # resolved once, in _config
        n_train, n_loc = len(self.train), self.series.num_locations
        condensed, input_channels = None, None
        if cell.method.kind == "static":
            condensed = self._condense(cell, config, ctx, record)
            input_channels = condensed.hints.get("input_channels")
            cfg = dataclasses.replace(cfg, **{k: v for k, v in condensed.hints.items()
                                              if k in {f.name for f in dataclasses.fields(cfg)}})
            m, n = condensed.shape(self.train)
            record["budget_achieved"] = (m * n) / (n_train * n_loc)
            record["condense_info"] = condensed.info
            _seed_evaluation(ctx, cell.seed)   # the same evaluation whether or not the set came from a cache
        else:
            m, n = n_train, n_loc
        train, val, test, eval_loc_input = self._eval_splits(input_channels)
        record["reduced_shape"] = [m, self.grid.window.input_len, n, train.series.num_channels]
        if n < n_loc and not MODELS.get(cell.model).inductive:
            raise Incompatible(f"model {cell.model} is transductive and cannot train on {n} of {n_loc} "
                               "locations; use an inductive model such as mtgnn-le")
        model = ctx.model_factory(n, in_channels=train.series.num_channels)
        if condensed is not None:
            source, schedule = cell.method.training_plan(condensed, train, model, ctx)
        else:
            source, schedule = RealSource(train), cell.method
            with ctx.meter.phase("condense"):  # a pruner's own set-up (e.g. ST-Prune's stationarity pass)
                cell.method.start(n_train, cell.budget, ctx)
        record["model_parameters"] = sum(p.numel() for p in model.parameters())
        result = fit(model, source, schedule, cfg, val, test, eval_loc_input, ctx,
                     progress=_epoch_progress if self.progress else None)
        record["train_config"] = dataclasses.asdict(cfg)
        record["metrics"] = {"val": result.val, "test": result.test}
        bad = [k for k in ("mae", "rmse", "rel_mae", "rel_rmse") if not np.isfinite(result.test.get(k, np.nan))]
        if bad:
            raise Diverged(f"non-finite test {', '.join(bad)}: training diverged or the test split has no "
                           "observed targets; check the data and lower the learning rate")
        record.update(best_epoch=result.best_epoch, epochs=cfg.epochs, optimizer_steps=result.optimizer_steps,
                      sample_visits=int(sum(result.visits_per_epoch)), visits_per_epoch=result.visits_per_epoch,
                      epoch_time_s=result.epoch_times, schedule_time_s=result.schedule_times,
                      val_history=result.val_history)
        record["location_sample_visits"] = record["sample_visits"] * n
        if cell.method.kind != "static":
            record["budget_achieved"] = sum(result.visits_per_epoch) / (cfg.epochs * n_train)
            # retention over all epochs is budget_achieved; pruners that anneal report their pruned epochs
            record["retention_nominal"] = cell.budget.ratio if cell.budget is not None else 1.0
            record["retention_pruned_epochs"] = record["budget_achieved"]
            report = getattr(cell.method, "report", None)
            if report is not None:
                record.update(report())

    def _condense(self, cell: Cell, config: dict, ctx: RunContext, record: dict):
        """Condense, or reuse the artifact of an identical earlier condensation (its cost is kept).

        The artifact key is everything condensation depends on: the evaluation model too when the
        method declares ``uses_eval_model`` (CRAIG selects with it). A setup stage the method reused
        from a cache (``info["reused_setup_s"]``, e.g. MTT's experts) is charged to the condensation
        time, so every run reports the method's whole cost. A cached set that is unreadable or does
        not fit the data is recomputed with a warning.
        """
        keys = ["dataset", "dataset_sha256", "dataset_options", "window", "method", "method_params", "budget",
                "seed", "preset", "device"] + (["model"] if cell.method.uses_eval_model else [])
        key = run_id({k: config[k] for k in keys})
        cached = self._cached_set(key)
        if cached is not None:
            condensed, cost = cached
            record.update(condense_cached=True, artifact=str(self.store.artifact_path(key)))
            ctx.meter.time_s["condense"] = cost["time_s"]
            ctx.meter.rss_peak["condense"] = cost["rss_peak"]
            if cost.get("cuda_peak"):
                ctx.meter.cuda_peak["condense"] = cost["cuda_peak"]
            return condensed
        with ctx.meter.phase("condense"):
            condensed = cell.method.condense(self.train, cell.budget, ctx)
        condensed.validate(self.train)
        ctx.meter.time_s["condense"] += float(condensed.info.get("reused_setup_s", 0.0))
        path = self.store.save_artifact(key, {
            "set": condensed.state(), "time_s": ctx.meter.time_s["condense"],
            "rss_peak": ctx.meter.rss_peak["condense"], "cuda_peak": ctx.meter.cuda_peak.get("condense", 0)})
        record.update(condense_cached=False, artifact=str(path))
        return condensed

    def _cached_set(self, key: str):
        """(set, cost) from a valid artifact, or None (missing, unreadable or malformed: recompute)."""
        payload = self.store.load_artifact(key)
        if payload is None:
            return None
        try:
            cost = {k: payload[k] for k in ("time_s", "rss_peak", "cuda_peak")}
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cost.values()):
                raise ValueError("cost entries are not numbers")
            return CondensedSet.from_state(payload["set"], self.train), cost
        except (KeyError, TypeError, ValueError) as err:
            warn(f"ignoring malformed artifact {self.store.artifact_path(key)} ({err}); recomputing it")
            return None


class Incompatible(Exception):
    """The evaluation model cannot be trained on this reduced set."""


class Diverged(Exception):
    """Training produced non-finite test metrics: never recorded as ``ok``."""


def _seed_evaluation(ctx: RunContext | None, seed: int) -> None:
    """Seed model initialisation, dropout and the trainer's draws from the cell's seed alone, so the
    evaluation does not depend on how many draws condensation made (or whether it ran at all)."""
    torch.manual_seed(seed)
    if ctx is not None:
        ctx.rng = np.random.default_rng(seed)
        ctx.torch_generator = torch.Generator().manual_seed(seed)


def _check_seeds(seeds: list) -> None:
    if not seeds:
        raise UserError("no seeds given; pass --seeds 0 or a comma-separated list such as 0,1,2")
    bad = [s for s in seeds if not isinstance(s, int) or s < 0]
    if bad:
        raise UserError(f"seeds must be integers >= 0 (got {bad}); pass e.g. --seeds 0,1,2")


def _check_params(params: dict, names: list[str]) -> None:
    """Every ``--set`` key must reach a selected method: a typo never passes silently."""
    accepted = {name: {f.name for f in dataclasses.fields(METHODS.get(name).Params)} for name in names}
    for key in params:
        target, _, param = key.rpartition(".")
        if target:
            if target.lower() not in accepted:
                METHODS.entry(target)   # an unknown method: raises with suggestions
                raise UserError(f"--set {key}: method {target} is not selected by --methods; add it or drop the --set")
        elif not any(param in fields for fields in accepted.values()):
            raise UserError(f"--set {key}: no selected method has a parameter {param!r}; see "
                            "`stbench list methods` (or use METHOD.PARAM)")


def _epoch_progress(epoch: int, total: int) -> None:
    """Epoch counter on one terminal line (only when stderr is a terminal)."""
    if sys.stderr.isatty():
        end = "\n" if epoch == total else ""
        print(f"\r    epoch {epoch}/{total}", end=end, file=sys.stderr, flush=True)
