"""Scores that separate a reduced set's quality from its confounders, and the cost of a model, from the frame.

- ``paired_scores``: every finished run of a reduced set against the same-budget ``random`` run of the
  same dataset, condensation seed, evaluation seed and evaluation model (group; the exact model
  preferred), and the full-data run of the same evaluation seed and model: improvement over random
  ``100 (e_random - e) / e_random`` (%) and the share of the random-to-full gap the set closes,
  ``(e_random - e) / (e_random - e_full)`` (1: as good as full data, 0: as good as random, negative:
  worse than random; undefined where random is already as good as full data). A pair whose runs were
  evaluated with different settings (``audit.differences``) is refused, not scored.
- ``cell_scores``: those pairs averaged per cell (dataset, method variant, budget, model group), with the
  sample std over seeds.
- ``break_even``: the smallest number k >= 1 of downstream trainings after which condensing once and
  training k times on the reduced set costs no more than training k times on full data.
- ``seed_spread``: the spread of a cell from its condensation seeds and from its evaluation seeds.
- ``control_pairs``: a method beside its expert-relabelling control and its hard-target runs.

The random reference is the plain ``random`` method: runs that are a relabelling control
(``control_of``) or trained on hard targets are never a reference.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from stbench.report.audit import differences

CELL = ["dataset_label", "family", "method", "variant", "budget_kind", "ratio", "budget_label", "model_group"]


def _plain(df: pd.DataFrame) -> pd.Series:
    return (df["control_of"] == "") & (df["targets"] != "hard")


def _references(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ok = df[(df["status"] == "ok") & _plain(df)]
    return ok[ok["method"] == "random"], ok[ok["budget_kind"] == "full"]


def _match(run, refs: pd.DataFrame, same_budget: bool) -> pd.DataFrame:
    """The reference runs of ``run``'s dataset, evaluation model group and seeds (same budget for random).

    Random: the same condensation and evaluation seed. Full data has no condensation, so its run of the
    same evaluation seed is taken when none has the same condensation seed. An exact model match (e.g.
    ``mtgnn-le`` for a location-reducing set) is preferred to another model of the group; a same-label
    budget to another split of the same ratio, and then the default split.
    """
    found = refs[(refs["dataset_label"] == run["dataset_label"]) & (refs["model_group"] == run["model_group"])]
    if same_budget:
        found = found[(found["budget_kind"] == run["budget_kind"]) & (found["ratio"] == run["ratio"])]
        if (found["budget_label"] == run["budget_label"]).any():
            found = found[found["budget_label"] == run["budget_label"]]
        elif (~found["explicit_split"]).any():
            found = found[~found["explicit_split"]]
    same_eval = found[found["eval_seed"] == run["eval_seed"]]
    both = same_eval[same_eval["seed"] == run["seed"]]
    found = both if len(both) or same_budget else same_eval
    if (found["model"] == run["model"]).any():
        found = found[found["model"] == run["model"]]
    return found


def paired_scores(df: pd.DataFrame, metric: str = "rel_rmse") -> pd.DataFrame:
    """One row per finished run with a budget: its error, its references' and the two scores.

    Columns: the cell keys, ``seed``, ``eval_seed``, ``model``, ``error``, ``random``, ``full``,
    ``improvement`` (%), ``gap_closed``, and ``refused`` / ``missing`` (why a run has no score, else "").
    Full-data runs do not appear (their gap closed is 1 by definition; the scores table shows their
    improvement over random, the headroom a set of that budget has).
    """
    randoms, fulls = _references(df)
    rows = []
    for run in df[(df["status"] == "ok") & (df["budget_kind"] == "compression")].to_dict("records"):
        row = {k: run[k] for k in CELL + ["seed", "eval_seed", "model", "run_id"]}
        row.update(error=run[metric], random=math.nan, full=math.nan, improvement=math.nan, gap_closed=math.nan,
                   refused="", missing="")
        rand, full = _match(run, randoms, True), _match(run, fulls, False)
        if rand.empty or full.empty:
            row["missing"] = " and ".join(w for w, ref in (("random", rand), ("full data", full)) if ref.empty)
            rows.append(row)
            continue
        refused = [f"{name}: {', '.join(d)}" for name, ref in (("random", rand), ("full data", full))
                   for d in [differences(run, ref.iloc[0])] if d]
        if refused:
            row["refused"] = "; ".join(refused)
            rows.append(row)
            continue
        e_rand, e_full = float(rand[metric].mean()), float(full[metric].mean())
        row.update(random=e_rand, full=e_full)
        if e_rand > 0:
            row["improvement"] = 100 * (e_rand - run[metric]) / e_rand
        if e_rand - e_full > 0:
            row["gap_closed"] = (e_rand - run[metric]) / (e_rand - e_full)
        rows.append(row)
    columns = CELL + ["seed", "eval_seed", "model", "run_id", "error", "random", "full", "improvement",
                      "gap_closed", "refused", "missing"]
    return pd.DataFrame(rows, columns=columns)


def cell_scores(df: pd.DataFrame, metric: str = "rel_rmse") -> pd.DataFrame:
    """Per cell: mean and sample std (ddof=1, NaN for one pair) over its scored runs, and the counts."""
    pairs = paired_scores(df, metric)
    rows = []
    for key, part in pairs.groupby(CELL, sort=True, dropna=False):
        scored = part[(part["refused"] == "") & (part["missing"] == "")]
        row = dict(zip(CELL, key))
        row.update(n_runs=len(part), n_scored=len(scored), n_refused=int((part["refused"] != "").sum()),
                   n_missing=int((part["missing"] != "").sum()))
        for value in ("error", "improvement", "gap_closed"):
            column = scored[value].dropna()
            row[f"{value}_mean"] = column.mean() if len(column) else math.nan
            row[f"{value}_std"] = column.std(ddof=1) if len(column) > 1 else math.nan
            row[f"{value}_n"] = len(column)
        rows.append(row)
    return pd.DataFrame(rows)


def break_even(condense: float, train_reduced: float, train_full: float) -> int | None:
    """The smallest k >= 1 with condense + k * train_reduced <= k * train_full, None (never) when the
    reduced set trains no faster than full data; NaN costs give None too (caller says "not recorded")."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (condense, train_reduced, train_full)):
        return None
    saving = train_full - train_reduced
    if saving <= 0:
        return None
    k = max(1, math.ceil(condense / saving))
    while k > 1 and condense + (k - 1) * train_reduced <= (k - 1) * train_full:   # float slack of ceil
        k -= 1
    while condense + k * train_reduced > k * train_full:
        k += 1
    return k


def seed_spread(df: pd.DataFrame, metric: str = "rel_rmse") -> pd.DataFrame:
    """Cells run with two or more condensation seeds and two or more evaluation seeds for at least one
    of them: ``condense_std`` = sample std over condensation seeds of the per-seed mean, ``eval_std`` =
    mean over condensation seeds (those with two or more evaluation seeds) of the sample std over their
    evaluation seeds, with the counts."""
    ok = df[df["status"] == "ok"]
    rows = []
    for key, part in ok.groupby(CELL, sort=True, dropna=False):
        per_seed = part.groupby("seed")[metric]
        evals = part.groupby("seed")["eval_seed"].nunique()
        if per_seed.ngroups < 2 or evals.max() < 2:
            continue
        means, stds = per_seed.mean(), per_seed.std(ddof=1)[evals >= 2]
        row = dict(zip(CELL, key))
        row.update(mean=float(part[metric].mean()), condense_std=float(means.std(ddof=1)),
                   eval_std=float(stds.mean()), n_condense=int(per_seed.ngroups),
                   n_eval=int(part["eval_seed"].nunique()), n_runs=len(part))
        rows.append(row)
    return pd.DataFrame(rows)


def control_pairs(df: pd.DataFrame, metric: str = "rel_rmse") -> pd.DataFrame:
    """Per (dataset, method variant, budget, model group) of a method that has a relabelling control or
    hard-target runs: mean error of the method's own runs, its control's (real windows relabelled by the
    same expert, ``control_of`` = the method), its hard-target runs', the plain random's of the budget,
    ``owed_to_expert`` = 100 (e_random - e_control) / e_random (% of random's error the relabelling alone
    removes) and ``share_of_gain`` = (e_random - e_control) / (e_random - e_method) (the part of the
    method's improvement over random that its relabelling alone gives). Every mean is over the same
    (seed, eval seed) pairs: those where the method and its control (else its hard-target runs) both ran."""
    ok = df[(df["status"] == "ok") & (df["budget_kind"] != "full")]
    controls = ok[(ok["control_of"] != "") & (ok["targets"] != "hard")]
    hard = ok[(ok["targets"] == "hard") & (ok["control_of"] == "")]
    own = ok[_plain(ok)]
    methods = set(controls["control_of"]) | set(hard["method"])
    keys = ["dataset_label", "budget_kind", "ratio", "budget_label", "model_group"]
    rows = []
    for key, runs in own[own["method"].isin(methods)].groupby(keys + ["family", "method", "variant"], sort=True):
        rec = dict(zip(keys + ["family", "method", "variant"], key))
        control = _at(controls, rec, keys)
        control = control[control["control_of"] == rec["method"]]
        hard_runs = _at(hard, rec, keys)
        hard_runs = hard_runs[(hard_runs["method"] == rec["method"]) & hard_runs["params"].isin(runs["params"])]
        randoms = _at(own, rec, keys)
        randoms = randoms[randoms["method"] == "random"]
        control, hard_runs = _same_seeds(control, runs), _same_seeds(hard_runs, runs)
        runs = _same_seeds(runs, control if len(control) else hard_runs)   # the seeds its control ran
        randoms = _same_seeds(randoms, runs)
        e_method, e_control = _mean(runs[metric]), _mean(control[metric])
        e_hard, e_random = _mean(hard_runs[metric]), _mean(randoms[metric])
        gain = e_random - e_method
        rows.append({**rec, "method_error": e_method, "control_error": e_control, "hard_error": e_hard,
                     "random_error": e_random,
                     "owed_to_expert": 100 * (e_random - e_control) / e_random if e_random > 0 else math.nan,
                     "share_of_gain": (e_random - e_control) / gain if gain > 0 else math.nan,
                     "n_method": len(runs), "n_control": len(control), "n_hard": len(hard_runs),
                     "n_random": len(randoms)})
    return pd.DataFrame(rows)


def _same_seeds(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` at a (seed, eval seed) pair of ``runs``."""
    if frame.empty:
        return frame
    pairs = set(zip(runs["seed"], runs["eval_seed"]))
    return frame[[pair in pairs for pair in zip(frame["seed"], frame["eval_seed"])]]


def _at(frame: pd.DataFrame, rec: dict, keys: list[str]) -> pd.DataFrame:
    """The rows of ``frame`` that agree with ``rec`` on ``keys``."""
    if frame.empty:
        return frame
    return frame[np.logical_and.reduce([frame[k] == rec[k] for k in keys])]


def _mean(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.mean()) if len(values) else math.nan
