"""Published numbers (``results/reference/*.csv``) and our measured values beside them.

Each CSV holds one number per line, transcribed from a paper's table: ``paper``, ``table``, ``setting``
(protocol in words), ``dataset`` and ``method`` (stbench registry names; ``paper_label`` keeps the
paper's), ``model`` (evaluation model, stbench name), ``budget`` (stbench label: ``0.5%``,
``1%=0.02x0.5`` for an explicit temporal x spatial split, ``r=10%``, ``full``), ``k`` (number of
location subsets where the table sweeps it), ``metric`` (``rel_mae``, ``rel_rmse``, ``mae``, ``rmse``,
``mape``, ``time_h``), ``mean``, ``std``, ``status`` (``ok`` or ``oom``), ``change_pct`` (the change
against full data the paper prints; positive: higher error) and ``note``.

A measured cell is put beside a published one when dataset, method, evaluation model group, budget
(``r=10%`` and ``10%`` count as one ratio), metric and, where the paper sweeps it, K all agree.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from stbench.report.frame import METRICS, aggregate

KEYS = ["dataset", "method", "model", "budget", "metric"]


def default_dir() -> Path:
    """``results/reference`` of the stbench checkout."""
    return Path(__file__).resolve().parents[2] / "results" / "reference"


def load_reference(folder: Path) -> pd.DataFrame:
    """All transcribed numbers, one row each; empty when the folder holds no CSV."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        return pd.DataFrame(columns=KEYS + ["paper", "table", "k", "mean", "std", "status"])
    frames = [pd.read_csv(f, dtype={"budget": str, "table": str}, keep_default_na=False,
                          na_values={"mean": [""], "std": [""], "k": [""], "change_pct": [""]}) for f in files]
    return pd.concat(frames, ignore_index=True)


def _budget_key(label: str) -> str:
    return str(label).removeprefix("r=")


def _ours(df: pd.DataFrame) -> pd.DataFrame:
    """Our cells in the reference's long form: one row per (dataset, method, model group, budget, K, metric)."""
    cells = aggregate(df, ["dataset", "dataset_label", "method", "model_group", "budget_label", "k", "preset"])
    rows = []
    for rec in cells.to_dict("records"):
        for metric in METRICS:
            rows.append({"dataset": rec["dataset"], "dataset_label": rec["dataset_label"], "method": rec["method"],
                         "model": rec["model_group"], "budget": _budget_key(rec["budget_label"]), "k": rec["k"],
                         "metric": metric, "preset": rec["preset"], "ours_mean": rec[f"{metric}_mean"],
                         "ours_std": rec[f"{metric}_std"], "ours_n": rec["n_ok"], "ours_status": rec["status"]})
    return pd.DataFrame(rows)


def side_by_side(df: pd.DataFrame, ref: pd.DataFrame) -> pd.DataFrame:
    """Matched (ours, paper) pairs; an empty frame when nothing matches."""
    if ref.empty:
        return pd.DataFrame()
    ours = _ours(df)
    paper = ref.assign(budget=ref["budget"].map(_budget_key))
    pairs = ours.merge(paper, on=KEYS, suffixes=("", "_paper"))
    pairs = pairs[pairs["k_paper"].isna() | (pairs["k"] == pairs["k_paper"])]
    pairs["diff_pct"] = 100 * (pairs["ours_mean"] - pairs["mean"]) / pairs["mean"]
    return pairs.sort_values(["paper", "table", "dataset", "method", "budget", "metric"]).reset_index(drop=True)


def comparison_markdown(df: pd.DataFrame, ref: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """The report section: matched cells, and plainly what could not be compared and why."""
    lines = ["## Published numbers beside ours", ""]
    if ref.empty:
        return "\n".join(lines + ["No reference tables were found, so nothing is compared.", ""])
    sources = ref.groupby("paper")["table"].unique()
    lines.append(f"{len(ref)} published numbers from " + "; ".join(
        f"{paper}: table {', '.join(tables)}" for paper, tables in sources.items()) + ".")
    lines.append("")
    if pairs.empty:
        lines.append("**No measured cell matches a published one** (same dataset, method, evaluation model, "
                     "budget and metric).")
    else:
        lines += [f"**{len(pairs)} measured cells match a published one.**", "", _pairs_table(pairs)]
        presets = sorted(set(pairs["preset"]) - {"paper"})
        if presets:
            lines += ["", (f"Our runs used preset {', '.join(presets)}, not the papers' protocol (preset paper): "
                           "expect different numbers.")]
    lines += ["", "### Not compared", ""] + _unmatched(df, ref, pairs)
    return "\n".join(lines) + "\n"


def _pairs_table(pairs: pd.DataFrame) -> str:
    rows = [[p["paper"], p["table"], p["dataset_label"], p["method"], p["model"], p["budget"],
             "" if pd.isna(p["k_paper"]) else f"{p['k_paper']:g}", p["metric"],
             _value(p["ours_mean"], p["ours_std"], p["ours_status"]) + f" (n={p['ours_n']})",
             _value(p["mean"], p["std"], p["status"]),
             f"{p['diff_pct']:+.1f}%" if math.isfinite(p["diff_pct"]) else "–"] for p in pairs.to_dict("records")]
    headers = ["paper", "table", "dataset", "method", "model", "budget", "K", "metric", "ours", "paper value",
               "ours vs paper"]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True)


def _value(mean: float, std: float, status: str) -> str:
    if status != "ok" or not math.isfinite(mean):
        return {"oom": "O.O.M."}.get(status, status)
    return f"{mean:.4g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _unmatched(df: pd.DataFrame, ref: pd.DataFrame, pairs: pd.DataFrame) -> list[str]:
    ours, theirs = set(df["dataset"]), set(ref["dataset"])
    lines = []
    if ours - theirs:
        lines.append(f"- No published numbers exist for our datasets {', '.join(sorted(ours - theirs))}; "
                     f"the papers report {', '.join(sorted(theirs))}.")
    shared = sorted(ours & theirs)
    if shared:
        cells = _ours(df[df["dataset"].isin(shared)])
        matched = set(zip(pairs["dataset"], pairs["method"], pairs["model"], pairs["budget"], pairs["metric"]))
        left = cells[[k not in matched for k in zip(*(cells[c] for c in KEYS))]]
        if len(left):
            lines.append(f"- {len(left)} measured cells on {', '.join(shared)} have no published counterpart "
                         "with the same method, evaluation model, budget and metric.")
    missing = sorted(theirs - ours)
    if missing:
        lines.append(f"- Published datasets not in the store: {', '.join(missing)}.")
    lines.append("- Published wall-clock times (time_h) come from the authors' hardware and are not compared.")
    return lines
