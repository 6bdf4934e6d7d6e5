"""The report's figures, as pure functions of the runs DataFrame; each returns a Figure or None.

Figures are built with matplotlib's object API (no pyplot, no global backend state) and saved as PDF
and PNG by ``save``. A method keeps its colour in every figure of a report (``colours``: a fixed
palette in sorted method order, full data in black); the marker shows the family.

- ``train-cost``: training time per epoch and peak training memory per method (STemDist Fig. 4).
- ``condense-time``: condensation time per outer iteration, or in total where a method has no outer
  iterations (STemDist Fig. 6).
- ``scalability``: condensation time against training windows, locations and features on log-log axes
  with the fitted slope (STemDist Fig. 5), from runs of any evaluation model.
- ``error-vs-condense``: test relative RMSE against condensation time (STemDist Fig. 7).
- ``prune-tradeoff``: per-epoch time against test MAE, RMSE, MAPE for pruning (ST-Prune Fig. 4).
- ``pareto``: test relative RMSE against the total cost of a model for every method and budget, with the
  Pareto front: set-up + condensation + evaluation training with its validation passes (frame column
  ``total_cost_s``; a cached set-up is charged once, inside the condensation time).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from stbench.report.frame import aggregate, default_split, primary_model
from stbench.report.tables import display

MARKERS = {"coreset": "o", "distill": "s", "timeseries": "^", "stemdist-variant": "P", "stemdist": "*",
           "selection": "v", "pruning": "D", "control": "h", "full": "X"}
PANEL = (3.4, 2.8)
SKIPPED = {
    "train-cost": "no finished run with epoch times",
    "condense-time": "no condensation run with a measured time",
    "scalability": "no method was condensed at two or more sizes of one dataset factor",
    "error-vs-condense": "no condensation run with a measured time",
    "prune-tradeoff": "no run with a retention budget",
    "error-vs-visits": "no run with a retention budget",
    "pareto": "no finished run with a training time",
}


def colours(methods) -> dict[str, tuple]:
    """One colour per method: a fixed palette in sorted name order; full data is black."""
    palette = [c for name in ("tab10", "Dark2", "Set1") for c in matplotlib.colormaps[name].colors]
    names = sorted(m for m in set(methods) if m != "full")
    out = {m: palette[i % len(palette)] for i, m in enumerate(names)}
    out["full"] = (0.0, 0.0, 0.0)
    return out


def _selected(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["model_group"] == primary_model(df)) & default_split(df)]


def _cells(df: pd.DataFrame, extra: tuple = ()) -> pd.DataFrame:
    keys = ["family", "method", "variant", "budget_kind", "ratio", "budget_label", "dataset_label", *extra]
    cells = aggregate(df, keys)
    return cells[cells["status"] == "ok"]


def _figure(rows: int, cols: int) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(PANEL[0] * cols + 1.8, PANEL[1] * rows), layout="constrained")
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def _label(rec: dict, with_budget: bool = True) -> str:
    name = display(rec["variant"], rec["method"])
    return name if rec["budget_kind"] == "full" or not with_budget else f"{name} {rec['budget_label']}"


def _legend(fig: Figure, records, palette: dict) -> None:
    seen = {}
    for rec in records:
        seen.setdefault(rec["method"], rec)
    handles = [Line2D([], [], color=palette[m], marker=MARKERS.get(r["family"], "v"), linestyle="",
                      label=display(m, m)) for m, r in sorted(seen.items())]
    fig.legend(handles=handles, loc="outside right center", fontsize="small", frameon=False)


def train_cost(df: pd.DataFrame, palette: dict) -> Figure | None:
    cells = _cells(_selected(df)).dropna(subset=["epoch_s_mean"])
    if cells.empty:
        return None
    datasets = sorted(cells["dataset_label"].unique())
    gpu = (df["memory_kind"] == "GPU").any()
    fig, axes = _figure(2, len(datasets))
    for j, dataset in enumerate(datasets):
        recs = _ordered(cells[cells["dataset_label"] == dataset])
        x = np.arange(len(recs))
        colour = [palette[r["method"]] for r in recs]
        axes[0, j].bar(x, [r["epoch_s_mean"] for r in recs], color=colour)
        axes[1, j].bar(x, [r["peak_train_bytes_mean"] / 2**20 for r in recs], color=colour)
        axes[0, j].set_title(dataset)
        axes[0, j].set_yscale("log")  # reduced sets train orders of magnitude faster than full data
        for ax in axes[:, j]:
            ax.set_xticks(x, [_label(r) for r in recs], rotation=60, ha="right", fontsize="x-small")
    axes[0, 0].set_ylabel("s per training epoch")
    axes[1, 0].set_ylabel(f"peak {'GPU memory' if gpu else 'RSS'} in training (MiB)")
    return fig


def _ordered(cells: pd.DataFrame) -> list[dict]:
    return sorted(cells.to_dict("records"), key=lambda r: (r["family"] == "full", r["method"], r["ratio"]))


def _condense_runs(df: pd.DataFrame, any_model: bool = False) -> pd.DataFrame:
    """Finished condensation runs with their time per outer iteration (or in total, without iterations).

    Condensation does not depend on the evaluation model, so ``any_model`` may take every model's runs.
    """
    sel = df[default_split(df)] if any_model else _selected(df)
    runs = sel[(sel["status"] == "ok") & sel["t_condense"].notna()].copy()
    iterations = pd.to_numeric(runs["outer_iterations"], errors="coerce")
    runs["per_iteration"] = iterations.notna()
    runs["condense_unit"] = runs["t_condense"] / iterations.fillna(1)
    return runs


def condense_time(df: pd.DataFrame, palette: dict) -> Figure | None:
    runs = _condense_runs(df)
    if runs.empty:
        return None
    datasets = sorted(runs["dataset_label"].unique())
    fig, axes = _figure(1, len(datasets))
    for ax, dataset in zip(axes[0], datasets):
        part = runs[runs["dataset_label"] == dataset]
        recs = _ordered(part.groupby(["family", "method", "variant", "budget_kind", "ratio", "budget_label"],
                                     as_index=False).agg(t=("condense_unit", "mean"), per=("per_iteration", "all")))
        x = np.arange(len(recs))
        ax.bar(x, [r["t"] for r in recs], color=[palette[r["method"]] for r in recs],
               hatch=[None if r["per"] else "//" for r in recs])
        ax.set_xticks(x, [_label(r) for r in recs], rotation=60, ha="right", fontsize="x-small")
        ax.set_yscale("log")
        ax.set_ylim(bottom=10 ** math.floor(math.log10(min(r["t"] for r in recs))))
        ax.set_title(dataset)
    axes[0, 0].set_ylabel("condensation s / outer iteration")
    if not runs["per_iteration"].all():
        fig.suptitle("hatched: whole condensation (no outer iterations)", fontsize="small")
    return fig


FACTORS = {"windows": "training windows", "locations": "locations", "features": "features"}


def scalability(df: pd.DataFrame, palette: dict) -> Figure | None:
    runs = _condense_runs(df, any_model=True)
    series = [(factor, s) for factor in FACTORS for s in _scaling_series(runs, factor)]
    if not series:
        return None
    factors = list(dict.fromkeys(f for f, _ in series))
    fig, axes = _figure(1, len(factors))
    for ax, factor in zip(axes[0], factors):
        for _, (rec, x, y) in (item for item in series if item[0] == factor):
            ax.loglog(x, y, marker=MARKERS.get(rec["family"], "v"), color=palette[rec["method"]],
                      label=f"{_label(rec)} on {rec['dataset']}: slope {fit_slope(x, y):.2f}")
        ax.set_xlabel(f"number of {FACTORS[factor]}")
        ax.legend(fontsize="x-small")
    axes[0, 0].set_ylabel("condensation s (per outer iteration where known)")
    return fig


def fit_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log y against log x (1: linear scaling)."""
    return float(np.polyfit(np.log10(x), np.log10(y), 1)[0])


def _scaling_series(runs: pd.DataFrame, factor: str) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """Mean time per value of ``factor`` for each method and budget with the other factors fixed."""
    fixed = [f for f in FACTORS if f != factor]
    out = []
    keys = ["family", "method", "variant", "budget_kind", "budget_label", "ratio", "dataset", *fixed]
    for key, part in runs.groupby(keys):
        means = part.groupby(factor)["condense_unit"].mean()
        means = means[(means.index > 0) & (means > 0)]
        if len(means) >= 2:
            out.append((dict(zip(keys, key)), means.index.to_numpy(float), means.to_numpy(float)))
    return out


def error_vs_condense(df: pd.DataFrame, palette: dict) -> Figure | None:
    runs = _condense_runs(df)
    if runs.empty:
        return None
    cells = _cells(runs, ("outer_iterations",)) if runs["outer_iterations"].notna().any() else _cells(runs)
    datasets = sorted(cells["dataset_label"].unique())
    fig, axes = _figure(1, len(datasets))
    for ax, dataset in zip(axes[0], datasets):
        part = cells[cells["dataset_label"] == dataset]
        for _, line in part.groupby(["variant", "budget_label"]):
            rec = line.iloc[0].to_dict()
            line = line.sort_values("t_condense_mean")
            ax.plot(line["t_condense_mean"], line["rel_rmse_mean"], marker=MARKERS.get(rec["family"], "v"),
                    color=palette[rec["method"]])
            _annotate(ax, line["t_condense_mean"].iloc[-1], line["rel_rmse_mean"].iloc[-1], rec)
        ax.set_xscale("log")
        ax.set_xlabel("condensation time (s)")
        ax.set_title(dataset)
    axes[0, 0].set_ylabel("test relative RMSE")
    _legend(fig, cells.to_dict("records"), palette)
    return fig


def _annotate(ax, x: float, y: float, rec: dict) -> None:
    """The budget (and parameter variant) beside a point; the legend gives the method."""
    if rec["budget_kind"] != "full":
        text = f"{rec['variant'][len(rec['method']):].strip()} {rec['budget_label']}".strip()
        ax.annotate(text, (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points")


def prune_tradeoff(df: pd.DataFrame, palette: dict) -> Figure | None:
    sel = _selected(df)
    cells = _cells(sel[sel["budget_kind"].isin(["retention", "full"])]).dropna(subset=["epoch_s_mean"])
    if not (cells["budget_kind"] == "retention").any():
        return None
    datasets = sorted(cells["dataset_label"].unique())
    metrics = {"mae": "MAE", "rmse": "RMSE", "mape": "MAPE (%)"}
    fig, axes = _figure(len(datasets), len(metrics))
    for i, dataset in enumerate(datasets):
        part = cells[cells["dataset_label"] == dataset]
        for j, (metric, name) in enumerate(metrics.items()):
            ax = axes[i, j]
            for _, line in part.groupby("variant"):
                line = line.sort_values("epoch_s_mean")
                rec = line.iloc[0].to_dict()
                full = rec["budget_kind"] == "full"
                ax.plot(line["epoch_s_mean"], line[f"{metric}_mean"], marker="*" if full else MARKERS["pruning"],
                        markersize=12 if full else 6, color=palette[rec["method"]])
            ax.set_xlabel("training time per epoch (s)")
            ax.set_ylabel(f"test {name}")
            ax.set_title(dataset, fontsize="small")
    _legend(fig, cells.to_dict("records"), palette)
    return fig


def error_vs_visits(df: pd.DataFrame, palette: dict) -> Figure | None:
    """Test MAE against the achieved share of sample visits over all epochs, one line per pruner and
    retention basis (dashed: pruned basis), with full data at 1: whatever a pruner was asked for, this
    is what it used."""
    sel = _selected(df)
    cells = _cells(sel[sel["budget_kind"].isin(["retention", "full"])], ("retention_basis",))
    cells = cells.dropna(subset=["achieved_mean", "mae_mean"])
    if not (cells["budget_kind"] == "retention").any():
        return None
    datasets = sorted(cells["dataset_label"].unique())
    fig, axes = _figure(1, len(datasets))
    for ax, dataset in zip(axes[0], datasets):
        part = cells[cells["dataset_label"] == dataset]
        for (_, basis), line in part.groupby(["variant", "retention_basis"]):
            line = line.sort_values("achieved_mean")
            rec = line.iloc[0].to_dict()
            full = rec["budget_kind"] == "full"
            ax.plot(line["achieved_mean"], line["mae_mean"], linestyle="--" if basis == "pruned" else "-",
                    marker="*" if full else MARKERS.get(rec["family"], "D"), markersize=12 if full else 5,
                    color=palette[rec["method"]])
        ax.set_xlabel("sample visits over all epochs / (epochs × windows)")
        ax.set_ylabel("test MAE")
        ax.set_title(dataset, fontsize="small")
    _legend(fig, cells.to_dict("records"), palette)
    return fig


def pareto(df: pd.DataFrame, palette: dict) -> Figure | None:
    sel = df[df["model_group"] == primary_model(df)]
    cells = _cells(sel, ("temporal", "spatial")).dropna(subset=["total_cost_s_mean", "rel_rmse_mean"])
    cells = cells[cells["total_cost_s_mean"] > 0]
    if cells.empty:
        return None
    datasets = sorted(cells["dataset_label"].unique())
    fig, axes = _figure(1, len(datasets))
    for ax, dataset in zip(axes[0], datasets):
        part = cells[cells["dataset_label"] == dataset]
        for rec in part.to_dict("records"):
            ax.scatter(rec["total_cost_s_mean"], rec["rel_rmse_mean"], color=palette[rec["method"]],
                       marker=MARKERS.get(rec["family"], "v"), s=36)
            _annotate(ax, rec["total_cost_s_mean"], rec["rel_rmse_mean"], rec)
        front = pareto_front(part["total_cost_s_mean"].to_numpy(), part["rel_rmse_mean"].to_numpy())
        ax.step(*front, where="post", color="0.4", linestyle="--", linewidth=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("total cost (s): set-up + condensation\n+ training + validation")
        ax.set_title(dataset)
        ax.legend(fontsize="x-small")
    axes[0, 0].set_ylabel("test relative RMSE")
    _legend(fig, cells.to_dict("records"), palette)
    return fig


def pareto_front(cost: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats in both cost and error, by increasing cost."""
    order = np.lexsort((error, cost))
    keep, best = [], math.inf
    for i in order:
        if error[i] < best:
            keep.append(i)
            best = error[i]
    return cost[keep], error[keep]


PLOTS = {"train-cost": train_cost, "condense-time": condense_time, "scalability": scalability,
         "error-vs-condense": error_vs_condense, "prune-tradeoff": prune_tradeoff,
         "error-vs-visits": error_vs_visits, "pareto": pareto}


def save(fig: Figure, folder: Path, stem: str) -> list[Path]:
    """The figure as PDF and PNG (fixed metadata, so reruns give the same PDF)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.pdf", folder / f"{stem}.png"]
    fig.savefig(paths[0], metadata={"CreationDate": None, "ModDate": None})
    fig.savefig(paths[1], dpi=150)
    return paths
