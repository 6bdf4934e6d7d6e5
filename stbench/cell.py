"""One cell of a grid as a self-contained job: ``run_cell(spec) -> record``, callable in any process.

A ``CellSpec`` names everything a cell needs and serialises to JSON: ``config`` (what determines the
result and is hashed into the run_id: dataset and its options and checksum, window, method and its
resolved parameters, budget, seed, evaluation model, preset, resolved training settings, device
type) plus where to find the data and the store, and which device to use. The process that runs a
cell loads the dataset itself, once per process (``workspace``). Condense (static methods) or start
the pruner (dynamic methods), train the evaluation model through the one trainer, test the selected
checkpoint on the full original test split: the returned record is what the driver appends to the
store. A failing cell returns a ``failed`` record; it never raises.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import stbench
from stbench import warn
from stbench.budgets import budget_from_dict
from stbench.data.catalog import load_dataset
from stbench.data.core import array_sha256
from stbench.data.windows import Series, WindowSpec
from stbench.measure import Meter
from stbench.models.graph import predefined_graph
from stbench.plugins import load_builtin
from stbench.protocols import CondensedSet, RunContext
from stbench.registry import DATASETS, METHODS, MODELS
from stbench.results import ResultStore, run_id
from stbench.sources import RealSource
from stbench.train import TrainConfig, fit

ARTIFACT_KEYS = ("dataset", "dataset_sha256", "dataset_options", "window", "method", "method_params", "budget",
                 "seed", "preset", "device")


@dataclass
class CellSpec:
    config: dict                 # the identity of the run (hashed into run_id)
    results: str                 # the store folder (artifacts are cached under it)
    data_dir: str | None = None
    device: str = "cpu"          # "cpu", "cuda" or "cuda:K"; config["device"] is its type

    @property
    def run_id(self) -> str:
        return run_id(self.config)

    @property
    def label(self) -> str:
        c = self.config
        budget = "-" if c["budget"] is None else _budget_label(c)
        return f"{c['dataset']} {c['method']} {budget} seed={c['seed']} model={c['model']}"

    @property
    def group(self) -> tuple:
        """Cells of one group share set-up a method may cache (expert buffers, teachers)."""
        return self.config["dataset"], self.config["method"], self.config["seed"]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CellSpec":
        return cls(**json.loads(text))


def run_cell(spec: CellSpec, progress=None) -> dict:
    """Run one cell in this process and return its record (status ok/failed/oom/incompatible)."""
    load_builtin()
    try:
        ws = workspace(spec.config["dataset"], json.dumps(spec.config["dataset_options"], sort_keys=True),
                       spec.data_dir, json.dumps(spec.config["window"], sort_keys=True), spec.device)
    except Exception as err:  # noqa: BLE001 - the data could not be loaded in this process
        return error_record(spec, "failed", f"loading the dataset: {type(err).__name__}: {err}".splitlines()[0])
    return ws.run(spec, progress)


@functools.lru_cache(maxsize=2)
def workspace(dataset: str, options_json: str, data_dir: str | None, window_json: str, device: str) -> "Workspace":
    """The loaded dataset of this process (arguments as JSON so they can be cached)."""
    return Workspace(dataset, json.loads(options_json), data_dir, WindowSpec(**_window(json.loads(window_json))),
                     torch.device(device))


def _window(spec: dict) -> dict:
    return dict(spec, split=tuple(spec["split"]))


def dataset_sha256(data) -> str:
    return data.meta.get("data_sha256") or array_sha256(np.asarray(data.values))


def error_record(spec: CellSpec, status: str, error: str, elapsed: float = 0.0) -> dict:
    """A record for a cell that produced none itself (its process died, timed out or could not load)."""
    c = spec.config
    return {"run_id": spec.run_id, "status": status, "error": error, "dataset": c["dataset"],
            "dataset_sha256": c["dataset_sha256"], "method": c["method"],
            "family": METHODS.entry(c["method"]).family, "method_params": c["method_params"],
            "budget": c["budget"], "seed": c["seed"], "model": c["model"], "preset": c["preset"],
            "budget_label": _budget_label(c), "train_config": c["train"], "device": spec.device,
            "time_s": {"total": elapsed},
            "finished_at": _now()}


class Workspace:
    """A dataset loaded on one device in one process, with its splits and the cost of loading it."""

    def __init__(self, dataset: str, options: dict, data_dir: str | None, window: WindowSpec,
                 device: torch.device):
        self.device, self.window = device, window
        self.spec = DATASETS.get(dataset)
        meter = Meter(device)
        with meter.phase("prepare"):
            data = load_dataset(dataset, data_dir, **options)
            self.series = Series(data, window, device)
            self.train, self.val, self.test = (self.series.split(s) for s in ("train", "val", "test"))
            self.eval_loc_input = self.train.location_input()
        self.prepare_cost = (meter.time_s["prepare"], meter.rss_peak["prepare"], meter.cuda_peak.get("prepare", 0))
        self.data_sha = dataset_sha256(data)

    # -- one cell -------------------------------------------------------------------------------
    def run(self, spec: CellSpec, progress=None) -> dict:
        meter = Meter(self.device)
        meter.time_s["prepare"], meter.rss_peak["prepare"], cuda_prepare = self.prepare_cost
        if self.device.type == "cuda":
            meter.cuda_peak["prepare"] = cuda_prepare
        record = self._base_record(spec)
        started = time.perf_counter()
        try:
            if spec.config["dataset_sha256"] != self.data_sha:
                raise RuntimeError("the dataset changed since the grid was planned; run the command again")
            self._execute(spec, meter, record, progress)
            record["status"] = "ok"
        except Incompatible as err:
            record.update(status="incompatible", error=str(err))
        except Diverged as err:
            record.update(status="failed", error=str(err))
        except (torch.cuda.OutOfMemoryError, MemoryError) as err:
            record.update(status="oom", error=f"{type(err).__name__}: {err}".splitlines()[0])
        except Exception as err:  # noqa: BLE001 - one failing cell never stops the grid
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
        record["finished_at"] = _now()
        return record

    def _base_record(self, spec: CellSpec) -> dict:
        c, data = spec.config, self.series.data
        return {
            "run_id": spec.run_id, "status": "running", "error": None, "started_at": _now(),
            "dataset": c["dataset"], "dataset_sha256": self.data_sha, "dataset_shape": list(data.shape),
            "mask_zeros": self.series.mask_zeros, "masked_target_share": self.series.masked_target_share,
            "split_windows": {k: len(v) for k, v in self.series.starts.items()},
            "method": c["method"], "family": METHODS.entry(c["method"]).family,
            "method_kind": METHODS.get(c["method"]).kind, "method_params": c["method_params"],
            "budget": c["budget"], "budget_label": _budget_label(c),
            "seed": c["seed"], "model": c["model"], "preset": c["preset"], "train_config": c["train"],
            "device": str(self.device), "versions": versions(self.device),
        }

    def _execute(self, spec: CellSpec, meter: Meter, record: dict, progress) -> None:
        c = spec.config
        method = METHODS.get(c["method"]).make(c["method_params"])
        record["label_source"] = method.label_source()
        budget = budget_from_dict(c["budget"])
        ctx = self._context(c["seed"], c["model"], c["preset"], meter)
        cfg = TrainConfig(**c["train"])
        n_train, n_loc = len(self.train), self.series.num_locations
        condensed, input_channels = None, None
        if method.kind == "static":
            condensed = self._condense(method, budget, spec, ctx, record)
            input_channels = condensed.hints.get("input_channels")
            cfg = dataclasses.replace(cfg, **{k: v for k, v in condensed.hints.items()
                                              if k in {f.name for f in dataclasses.fields(cfg)}})
            m, n = condensed.shape(self.train)
            record["budget_achieved"] = (m * n) / (n_train * n_loc)
            record["condense_info"] = condensed.info
            seed_evaluation(ctx, c["seed"])   # the same evaluation whether or not the set came from a cache
        else:
            m, n = n_train, n_loc
        train, val, test, eval_loc_input = self._eval_splits(input_channels)
        record["reduced_shape"] = [m, self.window.input_len, n, train.series.num_channels]
        if n < n_loc and not MODELS.get(c["model"]).inductive:
            raise Incompatible(f"model {c['model']} is transductive and cannot train on {n} of {n_loc} "
                               f"locations; use an inductive model such as {inductive_form(c['model'])}")
        model = ctx.model_factory(n, in_channels=train.series.num_channels)
        if condensed is not None:
            source, schedule = method.training_plan(condensed, train, model, ctx)
        else:
            source, schedule = RealSource(train), method
            with ctx.meter.phase("condense"):  # a pruner's own set-up (e.g. ST-Prune's stationarity pass)
                method.start(n_train, budget, ctx)
        record["model_parameters"] = sum(p.numel() for p in model.parameters())
        record["graph_source"] = self.graph_source(c["model"])
        result = fit(model, source, schedule, cfg, val, test, eval_loc_input, ctx,
                     progress=_epoch_progress if progress else None)
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
        if method.kind != "static":
            record["budget_achieved"] = sum(result.visits_per_epoch) / (cfg.epochs * n_train)
            # retention over all epochs is budget_achieved; pruners that anneal report their pruned epochs
            record["retention_nominal"] = budget.ratio if budget is not None else 1.0
            record["retention_basis"] = budget.basis if budget is not None else None
            record["retention_total"] = record["budget_achieved"]
            record["retention_pruned_epochs"] = record["budget_achieved"]
            report = getattr(method, "report", None)
            if report is not None:
                record.update(report())

    def _context(self, seed: int, model: str, preset: str, meter: Meter) -> RunContext:
        seed_evaluation(None, seed)
        return RunContext(
            seed=seed, device=self.device, rng=np.random.default_rng(seed),
            torch_generator=torch.Generator().manual_seed(seed), meter=meter, preset=preset,
            series=self.series, model_factory=self._model_factory(model), dataset_defaults=dict(self.spec.defaults),
        )

    @functools.cached_property
    def graph(self) -> tuple[np.ndarray | None, str]:
        """The predefined graph of models with ``uses_adjacency``, and its source (``predefined_graph``)."""
        return predefined_graph(self.series.data.adj, self.series.data.coords)

    def graph_source(self, model: str) -> str | None:
        return self.graph[1] if getattr(MODELS.get(model), "uses_adjacency", False) else None

    def _model_factory(self, name: str):
        window, series, device = self.window, self.series, self.device

        def build(num_locations: int, model_name: str | None = None, in_channels: int | None = None):
            cls = MODELS.get(model_name or name)
            extra = {}
            if getattr(cls, "uses_adjacency", False) and self.graph[0] is not None \
                    and num_locations == series.num_locations:   # e.g. Graph WaveNet's transition supports
                extra["adjacency"] = self.graph[0]
            return cls(num_locations, in_channels or series.num_channels, len(series.data.targets),
                       window.input_len, window.output_len, **extra).to(device)
        return build

    def _eval_splits(self, input_channels: list[int] | None):
        """Train/val/test windows and the evaluation encoder input, for a subset of input channels."""
        if input_channels is None:
            return self.train, self.val, self.test, self.eval_loc_input
        series = self.series.with_inputs(input_channels)
        train = series.split("train")
        return train, series.split("val"), series.split("test"), train.location_input()

    def _condense(self, method, budget, spec: CellSpec, ctx: RunContext, record: dict) -> CondensedSet:
        """Condense, or reuse the artifact of an identical earlier condensation (its cost is kept).

        The artifact key is everything condensation depends on: the evaluation model too when the
        method declares ``uses_eval_model`` (CRAIG selects with it). A setup stage the method reused
        from a cache (``info["reused_setup_s"]``, e.g. MTT's experts) is charged to the condensation
        time, so every run reports the method's whole cost. A cached set that is unreadable or does
        not fit the data is recomputed with a warning.
        """
        keys = ARTIFACT_KEYS + (("model",) if method.uses_eval_model else ())
        key = run_id({k: spec.config[k] for k in keys})
        store = ResultStore(spec.results)
        cached = self._cached_set(store, key)
        if cached is not None:
            condensed, cost = cached
            record.update(condense_cached=True, artifact=str(store.artifact_path(key)))
            ctx.meter.time_s["condense"] = cost["time_s"]
            ctx.meter.rss_peak["condense"] = cost["rss_peak"]
            if cost.get("cuda_peak"):
                ctx.meter.cuda_peak["condense"] = cost["cuda_peak"]
            return condensed
        with ctx.meter.phase("condense"):
            condensed = method.condense(self.train, budget, ctx)
        condensed.validate(self.train)
        ctx.meter.time_s["condense"] += float(condensed.info.get("reused_setup_s", 0.0))
        path = store.save_artifact(key, {
            "set": condensed.state(), "time_s": ctx.meter.time_s["condense"],
            "rss_peak": ctx.meter.rss_peak["condense"], "cuda_peak": ctx.meter.cuda_peak.get("condense", 0)})
        record.update(condense_cached=False, artifact=str(path))
        return condensed

    def _cached_set(self, store: ResultStore, key: str):
        """(set, cost) from a valid artifact, or None (missing, unreadable or malformed: recompute)."""
        payload = store.load_artifact(key)
        if payload is None:
            return None
        try:
            cost = {k: payload[k] for k in ("time_s", "rss_peak", "cuda_peak")}
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cost.values()):
                raise ValueError("cost entries are not numbers")
            return CondensedSet.from_state(payload["set"], self.train), cost
        except (KeyError, TypeError, ValueError) as err:
            warn(f"ignoring malformed artifact {store.artifact_path(key)} ({err}); recomputing it")
            return None


class Incompatible(Exception):
    """The evaluation model cannot be trained on this reduced set."""


class Diverged(Exception):
    """Training produced non-finite test metrics: never recorded as ``ok``."""


def inductive_form(model: str) -> str:
    """The registered inductive (location-encoder) form of ``model``, or mtgnn-le."""
    le = f"{model}-le"
    return le if le in MODELS.names() else "mtgnn-le"


def seed_evaluation(ctx: RunContext | None, seed: int) -> None:
    """Seed model initialisation, dropout and the trainer's draws from the cell's seed alone, so the
    evaluation does not depend on how many draws condensation made (or whether it ran at all)."""
    torch.manual_seed(seed)
    if ctx is not None:
        ctx.rng = np.random.default_rng(seed)
        ctx.torch_generator = torch.Generator().manual_seed(seed)


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


def _budget_label(config: dict) -> str:
    return "full" if config["budget"] is None else budget_from_dict(config["budget"]).label


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _epoch_progress(epoch: int, total: int) -> None:
    """Epoch counter on one terminal line (only when stderr is a terminal)."""
    if sys.stderr.isatty():
        end = "\n" if epoch == total else ""
        print(f"\r    epoch {epoch}/{total}", end=end, file=sys.stderr, flush=True)
