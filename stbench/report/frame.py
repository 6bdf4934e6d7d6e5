"""Records to a tidy DataFrame (one row per run) and mean/std/n per cell.

Every column a table or plot needs is derived here, once: the effective temporal x spatial split,
the number of location subsets K, the evaluation model's group (``mtgnn-le`` belongs to ``mtgnn``),
a label that tells apart runs of one method with different parameters (and hard-target or
relabelling-control runs of it), the costs of a run, and the protocol fields the scores and the audit read.

Record fields that may be absent are kept as "not recorded" (empty text, NaN), never filled in with a
default: ``label_source``, ``eval_seed`` (absent: the evaluation model's seed is ``seed``), ``lr_search``,
``targets``, ``control_of``, ``protocol``.

Costs of a run (seconds): ``t_condense`` = ``time_s.condense``, which already holds every set-up stage
(experts, teachers, proxies, clustering; a stage reused from a cache is charged to it by the runner as
``condense_info.reused_setup_s``, so it is never added again); ``setup_s`` is the part of it the method
reports as set-up (``SETUP_FIELDS``); ``t_eval_train`` = ``time_s.train`` + ``time_s.validate`` (the
evaluation model's training with its validation passes); ``total_cost_s`` = condensation + evaluation
training; ``peak_bytes`` = the largest peak over all phases (GPU memory where recorded, else RSS).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from stbench import UserError
from stbench.budgets import Compression
from stbench.results import ResultStore

METRICS = ("rel_mae", "rel_rmse", "mae", "rmse", "mape")
VALUES = METRICS + ("t_condense", "t_train", "t_total", "cost_s", "epoch_s", "peak_train_bytes", "achieved",
                    "retention_pruned", "setup_s", "t_validate", "t_eval_train", "total_cost_s", "peak_bytes")
LABEL_SOURCES = ("real", "learned", "expert-relabelled", "teacher")
NOT_RECORDED = "not recorded"
# set-up stages inside the condensation time, as methods report them in ``condense_info`` (seconds);
# expert buffers count once: ``reused_setup_s`` when they came from a cache, else their build time
SETUP_FIELDS = ("teacher_s", "clustering_s", "warmup_s")
EXPERT_FIELDS = ("reused_setup_s", "experts_build_s")
K_PARAM = "subsets"                 # method parameter: number of location subsets K (else the trainer's)
OUTER_PARAM = "outer_iterations"    # method parameter (0: the preset's); condense_info.loops.outer is the run's
DEFAULT_MODEL = "mtgnn"             # the papers' evaluation model, preferred for the main tables


def load_frame(results_dir) -> pd.DataFrame:
    """The store as a DataFrame; a missing, empty or unreadable store is a UserError."""
    try:
        records = ResultStore(results_dir).require_records()
    except OSError as err:
        raise UserError(f"cannot read the results store {results_dir}: {err.strerror or err}") from None
    return runs_frame(records)


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per run record, with the derived columns the report uses."""
    rows = [_row(r) for r in records if r.get("dataset") and r.get("method")]
    if not rows:
        raise UserError("the results store holds no run with a dataset and a method")
    df = pd.DataFrame(rows)
    df["dataset_label"] = _dataset_labels(df)
    df["variant"] = variants(df)
    return df


def _row(r: dict) -> dict:
    budget = r.get("budget") or {}
    test = (r.get("metrics") or {}).get("test") or {}
    times = r.get("time_s") or {}
    shape = list(r.get("dataset_shape") or [None, None, None])
    params = r.get("method_params") or {}
    temporal, spatial = _split(r, budget)
    row = {
        "run_id": r.get("run_id"), "dataset": r["dataset"], "method": r["method"],
        "family": r.get("family") or "", "kind": r.get("method_kind") or "",
        "params": json.dumps(params, sort_keys=True, default=str),
        "params_wo_k": json.dumps({k: v for k, v in params.items() if k != K_PARAM}, sort_keys=True, default=str),
        "model": r.get("model") or "",
        "model_group": _model_group(r.get("model") or ""), "seed": r.get("seed"),
        "status": r.get("status") or "failed", "error": r.get("error") or "", "preset": r.get("preset") or "",
        "budget_kind": budget.get("kind", "full"), "ratio": budget.get("ratio", 1.0),
        # retention over all epochs or the pruned ones; records from before the basis existed: pruned
        "retention_basis": budget.get("basis", "pruned") if budget.get("kind") == "retention" else "",
        "budget_label": r.get("budget_label") or "full", "temporal": temporal, "spatial": spatial,
        "explicit_split": budget.get("temporal") is not None,
        "k": params.get(K_PARAM, (r.get("train_config") or {}).get("location_subsets")),
        "outer_iterations": _positive(((r.get("condense_info") or {}).get("loops") or {}).get("outer")
                                      or params.get(OUTER_PARAM)),
        "windows": (r.get("split_windows") or {}).get("train"), "steps": shape[0],
        "locations": shape[1], "features": shape[2] if len(shape) > 2 else None,
        "shape": "x".join(str(s) for s in shape),
    }
    row.update({m: _number(test.get(m)) for m in METRICS})
    row.update(_costs(r, times))
    row["achieved"] = _number(r.get("budget_achieved"))
    row["retention_pruned"] = _number(r.get("retention_pruned_epochs"))  # a pruner's share over pruned epochs
    train = r.get("train_config") or {}
    row["select"], row["select_metric"] = train.get("select"), train.get("select_metric")   # named in captions
    row["eq5_weighted_share"] = _number(r.get("eq5_weighted_share"))   # ST-Prune: kept visits with eq. 5 weights
    row.update(_protocol(r, train))
    return row


def _protocol(r: dict, train: dict) -> dict:
    """What the label-source marks, the scores, the seed table and the protocol audit read from a record."""
    lr_search = r.get("lr_search") if isinstance(r.get("lr_search"), dict) else None
    protocol = r.get("protocol") if isinstance(r.get("protocol"), dict) else None
    eval_seed = r.get("eval_seed")
    return {
        "label_source": r.get("label_source") or "",
        "eval_seed": eval_seed if eval_seed is not None else r.get("seed"),
        "eval_seed_recorded": eval_seed is not None,
        "targets": r.get("targets") or "",
        "control_of": r.get("control_of") or "",
        "lr": _number(train.get("lr")),
        "lr_search": json.dumps(lr_search, sort_keys=True, default=str) if lr_search else "",
        "lr_chosen": _number((lr_search or {}).get("chosen")),
        "train_config": json.dumps(train, sort_keys=True, default=str),
        "protocol": json.dumps(protocol, sort_keys=True, default=str) if protocol else "",
        "test_windows": (r.get("split_windows") or {}).get("test"),
        "reduced_windows": (r.get("reduced_shape") or [None])[0],
        "syn_lr": _number((r.get("condense_info") or {}).get("syn_lr")),
        "mask_zeros": r.get("mask_zeros"),
    }


def _costs(r: dict, times: dict) -> dict:
    epochs = [t for t in (r.get("epoch_time_s") or []) if t is not None]
    cuda = (r.get("peak_cuda_bytes") or {}).get("train") or 0
    rss = (r.get("peak_rss_bytes") or {}).get("train") or 0
    condense, train = _number(times.get("condense")), _number(times.get("train"))
    validate = _number(times.get("validate"))
    eval_train = train + (0.0 if math.isnan(validate) else validate)
    peaks_cuda = [v for v in (r.get("peak_cuda_bytes") or {}).values() if _number(v) > 0]
    peaks_rss = [v for v in (r.get("peak_rss_bytes") or {}).values() if _number(v) > 0]
    peak = max(peaks_cuda or peaks_rss or [math.nan])
    return {
        "setup_s": _setup(r.get("condense_info") or {}, r) if not math.isnan(condense) else math.nan,
        "t_validate": validate, "validate_recorded": not math.isnan(validate), "t_eval_train": eval_train,
        "total_cost_s": eval_train + (0.0 if math.isnan(condense) else condense),
        "peak_bytes": float(peak), "peak_kind": "GPU" if peaks_cuda else "RSS",
        "t_condense": condense, "t_train": train, "t_total": _number(times.get("total")),
        "cost_s": float(np.nansum([condense, train])) if not math.isnan(train) else math.nan,
        "epoch_s": float(np.mean(epochs)) if epochs else math.nan,
        "peak_train_bytes": float(cuda or rss) if (cuda or rss) else math.nan,
        "memory_kind": "GPU" if cuda else "RSS",
    }


def _setup(info: dict, r: dict) -> float:
    """Seconds of the condensation spent on set-up stages (experts, teachers, proxies, clustering), 0 when
    the method reports none; a part of ``time_s.condense``, never added to it."""
    experts = next((_number(info[k]) for k in EXPERT_FIELDS if _number(info.get(k)) >= 0), 0.0)
    proxies = _number((((r.get("selection_info") or {}).get("time_s")) or {}).get("proxy_s"))
    parts = [experts, proxies] + [_number(info.get(k)) for k in SETUP_FIELDS]
    return float(sum(p for p in parts if not math.isnan(p)))


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def _positive(value):
    """A count that is set (0 means "the preset's", which the record does not resolve)."""
    return value if isinstance(value, (int, float)) and value > 0 else None


def _model_group(model: str) -> str:
    """A model and its location-encoder version (``-le``) form one group, as in the papers."""
    return model.removesuffix("-le")


def _split(r: dict, budget: dict) -> tuple[float, float]:
    """(temporal, spatial) ratios: explicit, else the default split of a bi-dimensional set, else (rho, 1)."""
    if budget.get("kind") != "compression":
        return math.nan, math.nan
    if budget.get("temporal") is not None:
        return float(budget["temporal"]), float(budget["spatial"])
    reduced, shape = r.get("reduced_shape"), r.get("dataset_shape")
    if not reduced or not shape:
        return math.nan, math.nan
    if reduced[2] < shape[1]:
        return Compression(budget["ratio"]).bidimensional_split()
    return float(budget["ratio"]), 1.0


def _dataset_labels(df: pd.DataFrame) -> pd.Series:
    """The dataset name, with its shape where one name was run at several sizes."""
    sizes = df.groupby("dataset")["shape"].transform("nunique")
    return df["dataset"].where(sizes <= 1, df["dataset"] + " (" + df["shape"] + ")")


def variants(df: pd.DataFrame) -> pd.Series:
    """The method name, plus the parameters that differ where one method ran with several settings in ``df``."""
    labels = df["method"].copy()
    for method, runs in df.groupby("method"):
        settings = runs["params"].unique()
        if len(settings) < 2:
            continue
        decoded = {s: json.loads(s) for s in settings}
        keys = sorted({k for p in decoded.values() for k in p
                       if len({json.dumps(q.get(k), sort_keys=True) for q in decoded.values()}) > 1})
        for setting, params in decoded.items():
            text = ", ".join(f"{k}={params.get(k)}" for k in keys)
            labels[(df["method"] == method) & (df["params"] == setting)] = f"{method} ({text})"
    if "targets" in df.columns:      # a set trained with its targets replaced by the real data's
        labels = labels.where(df["targets"] != "hard", labels + " (hard targets)")
    if "control_of" in df.columns:   # real windows relabelled by a method's expert, standing for that method
        labels = labels.where(df["control_of"] == "", labels + " (control of " + df["control_of"] + ")")
    return labels


def default_split(df: pd.DataFrame) -> pd.Series:
    """Runs of the method's default budget: no explicit split, or the explicit split equal to the default."""
    if df.empty:
        return pd.Series(dtype=bool)
    return ~df["explicit_split"] | df.apply(_is_default, axis=1)


def _is_default(r) -> bool:
    if r["budget_kind"] != "compression" or not r["explicit_split"]:
        return False
    temporal, spatial = Compression(r["ratio"]).bidimensional_split()
    return math.isclose(r["temporal"], temporal) and math.isclose(r["spatial"], spatial)


def primary_model(df: pd.DataFrame) -> str:
    """The model group the main tables use: the papers' MTGNN if present, else the most-run group."""
    counts = df["model_group"].value_counts()
    return min(counts.index, key=lambda g: (g != DEFAULT_MODEL, -counts[g], g))


def aggregate(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per cell (``keys``): n_runs, n_ok, status, partial, and mean/std of every value over ok runs.

    status is ``ok`` when any run succeeded, else ``oom`` if any ran out of memory, else ``failed`` or
    ``incompatible``. The std needs two ok runs (NaN otherwise), as a sample std (ddof=1).
    """
    rows = []
    for key, runs in df.groupby(keys, sort=True, dropna=False):
        ok = runs[runs["status"] == "ok"]
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(n_runs=len(runs), n_ok=len(ok), status=_cell_status(runs["status"]),
                   partial=0 < len(ok) < len(runs))
        for value in VALUES:
            column = ok[value].dropna()
            row[f"{value}_mean"] = column.mean() if len(column) else math.nan
            row[f"{value}_std"] = column.std(ddof=1) if len(column) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _cell_status(statuses: pd.Series) -> str:
    found = set(statuses)
    for status in ("ok", "oom", "failed", "incompatible"):
        if status in found:
            return status
    return "failed"
