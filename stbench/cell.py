"""One cell of a grid as a self-contained job: ``run_cell(spec) -> record``, callable in any process.

A ``CellSpec`` names everything a cell needs and serialises to JSON: ``config`` (what determines the
result and is hashed into the run_id: dataset and its options and checksum, window, method and its
resolved parameters, budget, seed, evaluation model, preset, resolved training settings, device
type; and, only where they change the run, ``eval_seed``, ``eval_lr_grid`` and ``targets``) plus where
to find the data and the store, and which device to use. The process that runs a cell loads the
dataset itself, once per process (``workspace``). Condense (static methods) or start the pruner
(dynamic methods), train the evaluation model through the one trainer, test the selected checkpoint
on the full original test split: the returned record is what the driver appends to the store. A
failing cell returns a ``failed`` record; it never raises.

The evaluation protocol, as records state it:

* Seeds. ``seed`` seeds condensation; ``eval_seed`` (``config["eval_seed"]``, default the seed) seeds
  the evaluation model's initialisation, dropout and batch order (``seed_evaluation``), and for pruners
  and full data, which condense nothing, the whole run. The condensed set is cached under a key
  without the eval seed (``ARTIFACT_KEYS``), so every eval seed of a condensation seed reuses one
  condensation, whose cost each record carries.
* Learning rate. With ``eval_lr_grid`` one model per rate is trained (same eval seed, same set, none of
  them tested), the rate whose selected checkpoint scores lowest on validation is chosen and only its
  model is tested; ``lr_search`` records the grid, each rate's validation score and the choice, and
  ``train_config.lr`` the chosen rate. Every grid run's epochs count in ``time_s.train`` (and its
  validation passes in ``time_s.validate``): the search is part of the training cost. The grid
  replaces a learning rate a method hints (``lr_search.default_lr`` is the one it replaced).
* Targets (``targets``). ``as-condensed`` trains on the set as the method made it; ``hard`` puts the
  real targets of the set's inputs in place where they exist: a coreset already has them (the
  identity, ``hard_targets: "identity"``, as for pruners and full data); a synthetic set whose inputs
  are real windows it names in ``info["real_inputs"]`` (checked) becomes the coreset of those windows
  (``"replaced"``); learned inputs have no real target: ``incompatible``.
* ``protocol``: the split that selects the checkpoint, the split the scaler was fit on (checked
  against the data), and what the test loop saw (windows scored, batches not scored).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
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
from stbench.data.windows import Series, WindowSet, WindowSpec, split_bounds
from stbench.measure import Meter
from stbench.models.graph import predefined_graph
from stbench.plugins import load_builtin
from stbench.protocols import CondensedSet, RunContext
from stbench.registry import DATASETS, METHODS, MODELS
from stbench.results import ResultStore, run_id
from stbench.sources import RealSource
from stbench.train import TrainConfig, fit, score_test

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
        extra = "".join((f" eval_seed={c['eval_seed']}" if "eval_seed" in c else "",
                         " lr-grid" if "eval_lr_grid" in c else "",
                         f" targets={c['targets']}" if "targets" in c else ""))
        return f"{c['dataset']} {c['method']} {budget} seed={c['seed']}{extra} model={c['model']}"

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
            "budget": c["budget"], "seed": c["seed"], "eval_seed": eval_seed_of(c),
            "targets": c.get("targets", "as-condensed"), "model": c["model"], "preset": c["preset"],
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
            self.scaler_fit = self._scaler_fit()
        self.prepare_cost = (meter.time_s["prepare"], meter.rss_peak["prepare"], meter.cuda_peak.get("prepare", 0))
        self.data_sha = dataset_sha256(data)

    def _scaler_fit(self) -> str:
        """The split whose observed steps the series' scaler was fit on: "train" when its per-channel
        means are those of the observed training steps (recomputed here, streamed in chunks), else
        "not train" (then the test split's statistics may have leaked into the normalisation)."""
        series = self.series
        train_end = split_bounds(series.data.shape[0], self.window.split)[0][1]
        values, observed = series.values, series.observed
        rows = max(1, (1 << 22) // max(1, values[0].numel()))
        total = torch.zeros(values.shape[-1], dtype=torch.float64, device=values.device)
        count = torch.zeros_like(total)
        for begin in range(0, train_end, rows):
            block = values[begin:min(begin + rows, train_end)].to(torch.float64)
            seen = torch.ones_like(block, dtype=torch.bool) if observed is None else \
                observed[begin:min(begin + rows, train_end)]
            total += torch.where(seen, block, 0.0).sum(dim=(0, 1))
            count += seen.sum(dim=(0, 1))
        mean = (total / count.clamp(min=1)).cpu().numpy()
        fitted = series.scaler.mean.astype(np.float64)
        close = np.abs(mean - fitted) <= 1e-4 * series.scaler.std + 1e-6 * np.abs(fitted)
        return "train" if bool(close.all()) else "not train"

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
            "seed": c["seed"], "eval_seed": eval_seed_of(c), "targets": c.get("targets", "as-condensed"),
            "model": c["model"], "preset": c["preset"], "train_config": c["train"],
            "device": str(self.device), "versions": versions(self.device),
            # facts of the evaluation protocol, from what the code did (filled in as the cell runs)
            "protocol": {"select_split": None, "scaler_fit": self.scaler_fit, "test_batches_dropped": None,
                         "test_windows": 0},
        }

    def _execute(self, spec: CellSpec, meter: Meter, record: dict, progress) -> None:
        c = spec.config
        seed, eval_seed = c["seed"], eval_seed_of(c)
        lr_grid, targets = c.get("eval_lr_grid"), c.get("targets", "as-condensed")
        method = METHODS.get(c["method"]).make(c["method_params"])
        record["label_source"] = method.label_source()
        if hasattr(method, "control_of"):
            record["control_of"] = method.control_of()
        budget = budget_from_dict(c["budget"])
        static = method.kind == "static"
        # condensation draws from the seed; pruners and full data condense nothing: all from the eval seed
        ctx = self._context(seed if static else eval_seed, c["model"], c["preset"], meter)
        cfg = TrainConfig(**c["train"])
        n_train, n_loc = len(self.train), self.series.num_locations
        condensed, input_channels = None, None
        if static:
            condensed = self._condense(method, budget, spec, ctx, record)
            input_channels = condensed.hints.get("input_channels")
            if targets == "hard":
                condensed = self._hard_targets(condensed, input_channels, record)
            cfg = dataclasses.replace(cfg, **{k: v for k, v in condensed.hints.items()
                                              if k in {f.name for f in dataclasses.fields(cfg)}})
            m, n = condensed.shape(self.train)
            record["budget_achieved"] = (m * n) / (n_train * n_loc)
            record["condense_info"] = condensed.info
        else:
            m, n = n_train, n_loc
            if targets == "hard":
                record["hard_targets"] = "identity"   # real windows with their real targets already
        train, val, test, eval_loc_input = self._eval_splits(input_channels)
        record["reduced_shape"] = [m, self.window.input_len, n, train.series.num_channels]
        if n < n_loc and not MODELS.get(c["model"]).inductive:
            raise Incompatible(f"model {c['model']} is transductive and cannot train on {n} of {n_loc} "
                               f"locations; use an inductive model such as {inductive_form(c['model'])}")
        record["protocol"]["select_split"] = self.split_name(val)

        def train_one(run_cfg: TrainConfig, first: bool, test_split):
            """One evaluation model, seeded from the eval seed alone (the same evaluation whether or not
            the set came from a cache, and for every rate of a learning-rate grid)."""
            seed_evaluation(ctx, eval_seed)
            runner = method if first else METHODS.get(c["method"]).make(c["method_params"])   # fresh state
            model = ctx.model_factory(n, in_channels=train.series.num_channels)
            if condensed is not None:
                source, schedule = runner.training_plan(condensed, train, model, ctx)
            else:
                source, schedule = RealSource(train), runner
                # a pruner's own set-up (e.g. ST-Prune's stationarity pass); repeated for later grid rates,
                # where it is part of their training
                with ctx.meter.phase("condense" if first else "train"):
                    runner.start(n_train, budget, ctx)
            result = fit(model, source, schedule, run_cfg, val, test_split, eval_loc_input, ctx,
                         progress=_epoch_progress if progress else None)
            return model, runner, result

        if lr_grid is None:
            model, method, result = train_one(cfg, True, test)
        else:
            cfg, model, method, result = self._lr_search(cfg, lr_grid, train_one, record)
            score_test(model, test, eval_loc_input, cfg, ctx, result)   # the chosen model only
        record["model_parameters"] = sum(p.numel() for p in model.parameters())
        record["graph_source"] = self.graph_source(c["model"])
        record["train_config"] = dataclasses.asdict(cfg)
        record["metrics"] = {"val": result.val, "test": result.test}
        record["protocol"].update(test_windows=result.test_windows, eval_batch=result.eval_batch,
                                  test_batches_dropped=-(-len(test) // result.eval_batch) - result.test_batches)
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

    @staticmethod
    def _lr_search(cfg: TrainConfig, grid: list, train_one, record: dict):
        """Train one model per learning rate of ``grid`` (same eval seed, same set), none of them tested;
        choose the rate whose selected checkpoint scores lowest on validation (``cfg.select_metric``;
        with ``select="best"`` its best validation score, with ``"last"`` the final model's; a
        non-finite score ranks last, ties go to the earlier rate of the grid). Returns (cfg with the
        chosen rate, its model with the selected checkpoint loaded, its method, its result). Every
        run's epochs count in the record's ``time_s.train``/``time_s.validate``; the per-epoch fields
        are the chosen run's."""
        hinted = cfg.lr
        scores, train_s, best = {}, {}, None
        for i, lr in enumerate(grid):
            run_cfg = dataclasses.replace(cfg, lr=lr)
            model, method, result = train_one(run_cfg, i == 0, None)
            score = result.val.get(cfg.select_metric, math.nan)
            score = float(score) if score is not None and math.isfinite(score) else math.inf
            scores[str(lr)] = score
            train_s[str(lr)] = float(sum(result.epoch_times))
            if best is None or score < best[0]:
                best = (score, run_cfg, model, method, result)
            del model, method, result
        _, cfg, model, method, result = best
        record["lr_search"] = {"grid": list(grid), "val": scores, "chosen": cfg.lr, "select_metric": cfg.select_metric,
                               "select": cfg.select, "train_s": train_s, "default_lr": hinted}
        return cfg, model, method, result

    def _hard_targets(self, condensed: CondensedSet, input_channels, record: dict) -> CondensedSet:
        """The set with the targets the real data gives its inputs (``--targets hard``).

        A coreset (real window ids) already trains on the real targets: the identity. A synthetic set
        whose inputs are real training windows, untouched, names them in ``info["real_inputs"]`` (the
        relabelling control): checked against the data, it becomes the coreset of those windows (their
        real targets and masks; weights and hints kept). Any other synthetic set has learned inputs, for
        which no real target exists: ``Incompatible``.
        """
        if condensed.x is None:
            record["hard_targets"] = "identity"
            return condensed
        ids = condensed.info.get("real_inputs")
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            train = self._eval_splits(input_channels)[0]
            if len(ids) and ids.min() >= 0 and ids.max() < len(train) and \
                    condensed.x.shape[2] == self.series.num_locations:
                real = train.batch(ids).x
                if real.shape == condensed.x.shape and torch.equal(real, condensed.x.to(real.device)):
                    record["hard_targets"] = "replaced"
                    record["label_source"] = "real"
                    return CondensedSet(indices=ids, sample_weight=condensed.sample_weight,
                                        location_weight=condensed.location_weight, hints=condensed.hints,
                                        info=condensed.info)
        raise Incompatible("hard targets not defined for learned inputs")

    def split_name(self, windows: WindowSet) -> str | None:
        """Which split of the series ``windows`` are (by their window starts), or None."""
        for name, starts in self.series.starts.items():
            if windows.starts is starts or np.array_equal(windows.starts, starts):
                return name
        return None

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


def eval_seed_of(config: dict) -> int:
    """The evaluation seed of a cell: ``config["eval_seed"]`` where it differs from the seed, else the seed."""
    return config.get("eval_seed", config["seed"])


def seed_evaluation(ctx: RunContext | None, seed: int) -> None:
    """Seed model initialisation, dropout and the trainer's draws from the cell's eval seed alone, so
    the evaluation does not depend on how many draws condensation made (or whether it ran at all)."""
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
