"""The report's tables, as pure functions of the runs DataFrame (``frame.runs_frame``).

- ``main``: methods grouped by family x datasets x relative MAE/RMSE, one table per compression ratio
  (STemDist Table III), with full-data training as "Original data".
- ``cross-model``: the same with one block per evaluation model (STemDist Table IV).
- ``sweeps``: datasets x temporal-spatial split, and datasets x number of subsets K, for every method
  and ratio that was run with more than one value (STemDist Table V), relative RMSE.
- ``pruning``: methods x datasets x retention ratios, one table per metric (MAPE, MAE, RMSE), with the
  change against full-data training in % (ST-Prune Table 1); static methods enter at the compression
  ratio equal to a retention ratio.
- ``time``: test MAE/RMSE/MAPE beside the cost of a model, condensation + training seconds, and the
  speed-up against full-data training (ST-Prune Table 2).
- ``scores``: per compression ratio, methods x datasets x (relative RMSE, improvement over the
  same-budget random in %, share of the random-to-full gap closed), from seed-matched pairs
  (``scores.paired_scores``); the chosen evaluation learning rate per cell where it was searched.
- ``cost``: the whole cost of a model: set-up, condensation (which includes the set-up), evaluation
  training (train + validate), total, peak memory over all phases, and the break-even number of
  downstream trainings against full data.
- ``seeds``: the spread from condensation seeds and from evaluation seeds, where both were varied.
- ``control``: a method beside its expert-relabelling control, its hard-target runs and random.

Every table with method rows marks each row with the label source of its training targets (a
superscript explained in the caption) and says whether the evaluation learning rate was searched.

Main, sweep, pruning and time tables use one evaluation model group (``frame.primary_model``) and the
default budget split; runs with another split appear in the sweeps.
"""
from __future__ import annotations

import json
import math
from functools import partial

import pandas as pd

from stbench.report import scores
from stbench.report.frame import aggregate, default_split, primary_model, variants
from stbench.report.render import Cell, Column, Row, Table, legend, mark

FAMILIES = {
    "coreset": "Coreset selection", "distill": "General distillation", "timeseries": "Time-series distillation",
    "stemdist-variant": "STemDist and variants", "stemdist": "STemDist and variants",
    "selection": "Static selection", "pruning": "Dynamic pruning", "control": "Relabelling controls",
    "full": "Full data",
}
NAMES = {
    "random": "Random", "kcenter": "K-Center", "herding": "Herding", "craig": "CRAIG", "dc": "DC", "dm": "DM",
    "mtt": "MTT", "datm": "DATM", "idm": "IDM", "frepo": "Frepo", "condtsf": "CondTSF", "timedc": "TimeDC",
    "stemdist": "STemDist", "stemdist-kcenter": "STemDist-K-Center", "stemdist-dc": "STemDist-DC",
    "stemdist-mtt": "STemDist-MTT", "stemdist-condtsf": "STemDist-CondTSF", "stemdist-1feat": "STemDist (1 feat.)",
    "stemdist-wo-g": "STemDist w/o G", "stemdist-wo-gc": "STemDist w/o G & C",
    "full": "Original data", "stprune": "ST-Prune", "infobatch": "InfoBatch", "soft-random": "Soft Random",
    "hard-random": "Hard Random", "epsilon-greedy": "ε-greedy", "ucb": "UCB",
    "cd": "CD", "kmeans": "K-Means", "least-confidence": "Least Confidence", "entropy": "Entropy", "margin": "Margin",
    "forgetting": "Forgetting", "grand": "GraNd", "cal": "Cal", "glister": "Glister", "graphcut": "GraphCut",
    "falo": "FaLo", "relabelled-random": "Relabelled Random",
}
LABELS = {"rel_mae": "Rel. MAE", "rel_rmse": "Rel. RMSE", "mae": "MAE", "rmse": "RMSE", "mape": "MAPE (%)",
          "cost_s": "Time (s)", "speedup": "Speed-up"}
RELATIVE = ("Relative MAE and RMSE on the test split: errors pooled over all test windows, horizons and "
            "locations, divided by the deviations from the test-split mean (STemDist eq. 6); missing readings "
            "(and zeros where they mean no reading) are masked.")
ABSOLUTE = ("Test MAE and RMSE in data units and MAPE in %, pooled over all test windows, horizons and "
            "locations; missing readings are masked.")
SKIPPED = {
    "main": "no run with a compression budget",
    "cross-model": "at every compression ratio, all runs use one evaluation model",
    "sweeps": "no method was run with several temporal-spatial splits or numbers of subsets K at one ratio",
    "pruning": "no run with a retention budget",
    "time": "no run at a default budget split",
    "scores": "no run of a method other than random with a compression budget",
    "cost": "no run at a default budget split",
    "seeds": "no cell was run with several condensation seeds and several evaluation seeds (eval_seed) per seed",
    "control": "no relabelling-control run (control_of) and no hard-target run (targets: hard)",
}
# the label source of a row's training targets, as a superscript mark; no mark: the real windows' own targets
LABEL_MARKS = {"real": "", "learned": "L", "expert-relabelled": "E", "teacher": "T"}
LABEL_NOTES = {
    "L": "L: learned targets, optimised with the synthetic inputs",
    "E": "E: expert-relabelled, targets produced by a full-data model (a frozen expert's forecasts moved into "
         "the set)",
    "T": "T: teacher labels, a full-data model's forecasts of the synthetic inputs",
    "H": "H: hard targets, the set's targets replaced by the real data's",
    "?": "?: label source not recorded (or not one of real, learned, expert-relabelled, teacher)",
}


def display(variant: str, method: str) -> str:
    """The paper's name of a method, with the parameter suffix of its variant."""
    return NAMES.get(method, method) + variant[len(method):]


def pct(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def slug(ratio: float) -> str:
    return f"{100 * ratio:g}".replace(".", "p") + "pct"


def _selected(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the primary model group at their method's default budget split."""
    return df[(df["model_group"] == primary_model(df)) & default_split(df)]


def _labelled(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with variant labels naming only the parameters that differ within them."""
    return runs.assign(variant=variants(runs))


def _cell(rec: dict, value: str) -> Cell:
    return Cell(mean=rec[f"{value}_mean"], std=rec[f"{value}_std"], n=int(rec["n_ok"]), status=rec["status"],
                partial=bool(rec["partial"]), unmet=_unmet(rec))


RETENTION_TOLERANCE = 0.01  # a pruner whose retention misses r by more than 1 point missed the budget


def _unmet(rec: dict) -> str:
    """Where a pruner missed its retention r, what it reached, else "".

    Total basis (``retention_basis`` in the cell's keys): the share of visits over all epochs
    (``achieved``) differs from r by more than one point, "visited X% for r=Y%". Pruned basis: its mean
    retention over the pruned epochs exceeds r, "kept X% for r=Y%". InfoBatch prunes only
    below-mean-loss samples, so a small r can be out of its reach; the achieved budget is measured, not
    assumed, and a cell that used more data than its column is not ranked in it.
    """
    ratio = rec.get("ratio", 1.0)
    if rec.get("retention_basis") == "total":
        visited = rec.get("achieved_mean", math.nan)
        missed = abs(visited - ratio) > RETENTION_TOLERANCE
        return f"visited {pct(round(visited, 3))} for r={pct(ratio)}" if missed else ""
    kept = rec.get("retention_pruned_mean", math.nan)
    return f"kept {pct(round(kept, 3))} for r={pct(ratio)}" if kept > ratio + RETENTION_TOLERANCE else ""


def _family_rank(family: str) -> int:
    order = list(FAMILIES)
    return order.index(family) if family in order else len(order)


def _family_groups(items: list[tuple[str, tuple, Row]]) -> list[tuple[str, list[Row]]]:
    """(family, sort key, row) items to row groups in family order; unknown families go last."""
    groups: list[tuple[str, list[Row]]] = []
    for family, _, row in sorted(items, key=lambda item: (_family_rank(item[0]), item[0], item[1])):
        name = FAMILIES.get(family, family or "Other")
        if groups and groups[-1][0] == name:
            groups[-1][1].append(row)
        else:
            groups.append((name, [row]))
    return groups


def _control(variant: str) -> bool:
    """A relabelling-control run stands for another method: shown, never ranked."""
    return "(control of " in variant


def _method_rows(agg: pd.DataFrame, cells_of) -> list[tuple[str, list[Row]]]:
    """One row per method variant, grouped by family; ``cells_of(rec)`` gives the row's cells."""
    rows: dict[str, tuple] = {}
    for rec in agg.to_dict("records"):
        variant = rec["variant"]
        if variant not in rows:
            ranked = rec["family"] != "full" and not _control(variant)
            row = Row(variant, display(variant, rec["method"]), ranked=ranked)
            rows[variant] = (rec["family"], (variant,), row)
        rows[variant][2].cells.update(cells_of(rec))
    return _family_groups(list(rows.values()))


def _comparison(runs: pd.DataFrame, datasets: list[str]) -> tuple[list[Column], list]:
    """Columns dataset x (relative MAE, relative RMSE) and method rows grouped by family."""
    metrics = ("rel_mae", "rel_rmse")
    columns = [Column((d, m), d, LABELS[m]) for d in datasets for m in metrics]
    agg = aggregate(runs, ["family", "method", "variant", "dataset_label"])
    groups = _method_rows(agg, lambda rec: {(rec["dataset_label"], m): _cell(rec, m) for m in metrics})
    return columns, groups


def _runs_text(table: Table, eval_seeds: bool = False) -> str:
    counts = sorted({table.cell(r, c).n for r in table.rows() for c in table.columns
                     if table.cell(r, c).status == "ok" and not table.cell(r, c).text})
    if not counts:
        return "No run finished"
    seeds = "seeds" if not eval_seeds else "condensation × evaluation seeds"
    if counts[-1] == 1:
        return f"One run ({seeds[:-1] if seeds == 'seeds' else seeds}) per cell, so no std"
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"Mean ± std over {span} runs ({seeds}) per cell; std omitted for a single run"


def _selection_text(runs: pd.DataFrame) -> str:
    """Which model each run tested, from its record's ``train_config`` (``select``: best validated
    checkpoint or last model, ``select_metric``: the validation metric that picked it).

    The frame carries them as columns ``select`` and ``select_metric``; where it has none, or no
    finished run recorded them, the caption says so instead of assuming the trainer's default.
    """
    ok = runs[runs["status"] == "ok"]
    if "select_metric" not in ok.columns or ok["select_metric"].isna().all():
        return "Tested checkpoint: not recorded in these runs."
    select = ok["select"] if "select" in ok.columns else pd.Series("best", index=ok.index)
    kinds = []
    for choice, metric in zip(select.fillna("best"), ok["select_metric"]):
        if choice == "last":
            kinds.append("the final model (no checkpoint selection)")
        elif isinstance(metric, str):
            kinds.append(f"the checkpoint with the best validation {LABELS.get(metric, metric)}")
        else:
            kinds.append("not recorded")
    counts = pd.Series(kinds).value_counts()
    if len(counts) == 1:
        return f"Tested: {counts.index[0]}."
    return "Tested: " + "; ".join(f"{kind} ({n} runs)" for kind, n in sorted(counts.items())) + "."


def _lr_text(runs: pd.DataFrame, per_cell: str = "the scores table") -> str:
    """Whether the evaluation learning rate was searched (``lr_search``) or fixed, from the records."""
    ok = runs[runs["status"] == "ok"]
    if "lr_search" not in ok.columns:
        return "Evaluation LR: not recorded in these runs."
    searched = ok[ok["lr_search"] != ""]
    fixed = ok[ok["lr_search"] == ""]["lr"].dropna()
    fixed_text = ", ".join(f"{lr:g} ({n} run{'s' if n > 1 else ''})" for lr, n in sorted(fixed.value_counts().items()))
    if searched.empty:
        if fixed.empty:
            return "Evaluation LR: not recorded in these runs; no LR search recorded."
        if fixed.nunique() == 1:
            return f"Evaluation LR: fixed at {fixed.iloc[0]:g}, no LR search."
        return f"Evaluation LR: fixed, no LR search: {fixed_text}."
    grids = sorted({json.dumps(sorted(json.loads(t).get("grid") or [])) for t in searched["lr_search"]})
    text = (f"Evaluation LR searched on validation for {len(searched)} of {len(ok)} runs (grid "
            f"{'; '.join(', '.join(f'{v:g}' for v in json.loads(g)) for g in grids)}); chosen rate per cell in "
            f"{per_cell}")
    if len(searched) < len(ok):
        unknown = len(ok) - len(searched) - len(fixed)
        text += f"; the others fixed: {fixed_text}" if fixed_text else ""
        text += f"; not recorded in {unknown} runs" if unknown else ""
    return text + "."


def label_marks(runs: pd.DataFrame) -> dict[str, str]:
    """Variant -> superscript mark of its training targets' label source (``LABEL_MARKS``; H: hard
    targets; ?: not recorded where other runs record it); empty where no run records a label source."""
    if "label_source" not in runs.columns or (runs["label_source"] == "").all():
        return {}
    out = {}
    for variant, part in runs.groupby("variant"):
        marks = []
        for source, targets in zip(part["label_source"], part["targets"]):
            found = "H" if targets == "hard" else LABEL_MARKS.get(source, "?") if source else "?"
            if found not in marks:
                marks.append(found)
        if len(marks) > 1 and "?" in marks:
            marks.remove("?")           # failed runs that never reached the method record no source
        out[variant] = ",".join(m for m in marks if m)
    return out


def _label_text(table: Table, runs: pd.DataFrame) -> str:
    """Mark the rows with their label source; the caption line explaining the marks."""
    marks = label_marks(runs)
    if not marks:
        return "Label source of the training targets: not recorded in these runs."
    for row in table.rows():
        row.mark = marks.get(row.key, marks.get(row.key.split(" @ ")[0], ""))
    shown = [m for m in LABEL_NOTES if any(m in row.mark.split(",") for row in table.rows())]
    if not shown:
        return "Label source: every row trains on the real windows' own targets."
    return ("Label source of the training targets (superscript; none: the real windows' own targets): "
            + "; ".join(LABEL_NOTES[m] for m in shown) + ".")


def _finish(table: Table, runs: pd.DataFrame, lead: str, ranking: str, labels: bool = True,
            lr_cells: str = "the scores table", counts: bool = True) -> Table:
    """Rank the cells and write the caption: metric protocol, budget, model, checkpoint, evaluation LR,
    runs, ranking, label sources (tables of method rows), status marks."""
    mark(table)
    models = ", ".join(sorted(runs["model"].unique()))
    eval_seeds = "eval_seed_recorded" in runs.columns and bool(
        (runs["eval_seed_recorded"].astype(bool) & (runs["eval_seed"] != runs["seed"])).any())
    parts = [lead, f"Evaluation model: {models}.", _selection_text(runs), _lr_text(runs, lr_cells),
             _runs_text(table, eval_seeds) + "." if counts else "", ranking, _label_text(table, runs) if labels else "",
             legend(table)]
    table.caption = " ".join(p for p in parts if p)
    return table


COLUMN_MARKS = "Best per column in bold, second best underlined (lower is better; Original data not ranked)."


def main_tables(df: pd.DataFrame) -> list[Table]:
    sel = _selected(df)
    comp, full = sel[sel["budget_kind"] == "compression"], sel[sel["budget_kind"] == "full"]
    tables = []
    for ratio in sorted(comp["ratio"].unique()):
        runs = _labelled(pd.concat([comp[comp["ratio"] == ratio], full]))
        columns, groups = _comparison(runs, sorted(runs["dataset_label"].unique()))
        table = Table(f"main_{slug(ratio)}", f"Main comparison at a compression ratio of {pct(ratio)}", "",
                      "Method", columns, groups)
        lead = (f"{RELATIVE} Training data reduced to {pct(ratio)} of the training windows × locations "
                "(bi-dimensional methods at their default temporal × spatial split); Original data: all of it.")
        tables.append(_finish(table, runs, lead, COLUMN_MARKS))
    return tables


def cross_model_tables(df: pd.DataFrame) -> list[Table]:
    sel = df[default_split(df)]
    comp, full = sel[sel["budget_kind"] == "compression"], sel[sel["budget_kind"] == "full"]
    tables = []
    for ratio in sorted(comp["ratio"].unique()):
        at_ratio = comp[comp["ratio"] == ratio]
        if at_ratio["model_group"].nunique() < 2:
            continue
        runs = pd.concat([at_ratio, full[full["model_group"].isin(at_ratio["model_group"])]])
        # a transductive model refused a cell (incompatible) that its location-encoder form ran: one
        # model group, one run of the cell, as in the papers' "with the location encoder where needed"
        cell = ["model_group", "dataset_label", "method", "params", "budget_label", "seed"]
        ran = pd.MultiIndex.from_frame(runs.loc[runs["status"] != "incompatible", cell])
        runs = _labelled(runs[~((runs["status"] == "incompatible") & pd.MultiIndex.from_frame(runs[cell]).isin(ran))])
        datasets = sorted(runs["dataset_label"].unique())
        blocks = []
        for _, block in runs.groupby("model_group"):
            columns, families = _comparison(block, datasets)
            blocks.append((" / ".join(sorted(block["model"].unique())), [r for _, rows in families for r in rows]))
        table = Table(f"cross-model_{slug(ratio)}", f"Cross-model comparison at a compression ratio of {pct(ratio)}",
                      "", "Method", columns, blocks, rank_scope="group")
        lead = f"{RELATIVE} One block per evaluation model, training data reduced to {pct(ratio)}."
        tables.append(_finish(table, runs, lead, COLUMN_MARKS.replace("per column", "per column and model")))
    return tables


def sweep_tables(df: pd.DataFrame) -> list[Table]:
    sel = df[df["model_group"] == primary_model(df)]
    comp = sel[(sel["budget_kind"] == "compression") & sel["temporal"].notna()]
    comp = comp.assign(split=list(zip(comp["temporal"], comp["spatial"])))
    tables = []
    for (method, _, ratio), runs in comp.groupby(["method", "params", "ratio"]):
        runs = _swept(runs, "split")
        if not runs.empty:
            columns = [Column(s, "Temporal-spatial split", f"({pct(s[0])}, {pct(s[1])})")
                       for s in sorted(runs["split"].unique())]
            tables.append(_sweep(runs, method, ratio, "split", columns, f"K = {_values(runs['k'])}"))
    for (method, _, ratio, split), runs in comp.groupby(["method", "params_wo_k", "ratio", "split"]):
        runs = _swept(runs.dropna(subset=["k"]), "k")
        if not runs.empty:
            columns = [Column(k, "Number of subsets K", f"{k:g}") for k in sorted(runs["k"].unique())]
            tables.append(_sweep(runs.assign(swept=runs["k"]), method, ratio, "k", columns,
                                 f"split {pct(split[0])} × {pct(split[1])}"))
    return tables


def _swept(runs: pd.DataFrame, column: str) -> pd.DataFrame:
    """The runs of datasets where ``column`` takes two or more values, with that value as ``swept``."""
    runs = runs[runs.groupby("dataset_label")[column].transform("nunique") > 1]
    return runs.assign(swept=runs[column])


def _values(series: pd.Series) -> str:
    return ", ".join(f"{v:g}" for v in sorted(series.dropna().unique())) or "n/a"


def _sweep(runs: pd.DataFrame, method: str, ratio: float, kind: str, columns: list[Column], fixed: str) -> Table:
    """Datasets x swept values (column ``swept``) of relative RMSE, with an average row over datasets."""
    agg = aggregate(runs, ["dataset_label", "swept"])
    rows = {d: Row(d, d) for d in sorted(agg["dataset_label"].unique())}
    for rec in agg.to_dict("records"):
        rows[rec["dataset_label"]].cells[rec["swept"]] = _cell(rec, "rel_rmse")
    groups = [("", list(rows.values()))]
    if len(rows) > 1:
        groups.append(("", [_average_row(list(rows.values()), columns)]))
    what = {"split": "temporal × spatial split (M_S/M_T, N_S/N_T)", "k": "number of location subsets K"}[kind]
    name = NAMES.get(method, method)
    table = Table(f"sweep-{kind}_{method}_{slug(ratio)}", f"{name}: effect of the {what.split(' (')[0]}", "",
                  "Dataset", columns, groups, rank_scope="row")
    lead = (f"Relative RMSE (STemDist eq. 6, test split, missing readings masked) of {name} at a total "
            f"compression ratio of {pct(ratio)} for each {what}; {fixed}.")
    lead += " Avg.: mean over datasets." if len(rows) > 1 else ""
    return _finish(table, runs, lead, "Best per row in bold, second best underlined (lower is better).",
                   labels=False)


def _average_row(rows: list[Row], columns: list[Column]) -> Row:
    avg = Row("avg", "Avg.")
    for col in columns:
        cells = [row.cells.get(col.key, Cell()) for row in rows]
        if all(c.status == "ok" and math.isfinite(c.mean) for c in cells):
            avg.cells[col.key] = Cell(mean=sum(c.mean for c in cells) / len(cells), n=1, status="ok")
    return avg


BASIS_TEXT = {
    "total": "Retention ratio r on the total basis: sample visits over all epochs = r × epochs × training windows "
             "for every method (pruners that anneal prune harder in their pruned epochs); static methods keep r "
             "of the training data.",
    "pruned": "Retention ratio r on the pruned basis (the papers' protocol): sample visits / (epochs × training "
              "windows) over the pruned epochs only, so pruners that anneal make more visits over all epochs; static "
              "methods keep r of the training data.",
}


def pruning_tables(df: pd.DataFrame) -> list[Table]:
    """ST-Prune's Table 1: static selection, then dynamic pruning, retention columns per dataset, change
    against full data; one set of tables per retention basis in the store."""
    sel = _selected(df)
    dynamic = sel[sel["budget_kind"] == "retention"]
    bases = [b for b in ("total", "pruned") if (dynamic["retention_basis"] == b).any()]
    tables = []
    for basis in bases:
        suffix = "" if len(bases) == 1 else f"_{basis}"
        tables += _pruning_tables(sel, dynamic[dynamic["retention_basis"] == basis], basis, suffix)
    return tables


def _pruning_tables(sel: pd.DataFrame, dynamic: pd.DataFrame, basis: str, suffix: str) -> list[Table]:
    ratios = sorted(dynamic["ratio"].unique())
    static = sel[(sel["budget_kind"] == "compression") & sel["ratio"].isin(ratios)]
    full = sel[sel["budget_kind"] == "full"]
    runs = _labelled(pd.concat([static, dynamic]))
    datasets = sorted(pd.concat([runs, full])["dataset_label"].unique())
    full_agg = {rec["dataset_label"]: rec for rec in aggregate(full, ["dataset_label"]).to_dict("records")}
    agg = aggregate(runs, ["family", "method", "variant", "dataset_label", "ratio", "retention_basis"])
    tables = []
    for metric in ("mape", "mae", "rmse"):
        columns = [Column((d, r), d, pct(r), decimals=2) for d in datasets for r in ratios]
        groups = _method_rows(agg, partial(_pruning_cells, metric=metric, full_agg=full_agg))
        if full_agg:
            row = Row("full", NAMES["full"], ranked=False)
            row.cells = {(d, r): _cell(full_agg[d], metric) for d in full_agg for r in ratios}
            groups.append((FAMILIES["full"], [row]))
        table = Table(f"pruning_{metric}{suffix}", f"Pruning: {LABELS[metric]} at retention ratios "
                      f"{', '.join(pct(r) for r in ratios)} ({basis} basis)", "", "Method", columns, groups)
        lead = (f"{ABSOLUTE} {BASIS_TEXT[basis]} A cell whose achieved share misses r by more than one point is "
                "marked with what it reached and not ranked. In parentheses: change against full-data training in "
                "% (positive: higher error)" + ("" if full_agg else "; no full-data run, so no change") + ".")
        lead = " ".join(p for p in (lead, _eq5_text(runs)) if p)
        tables.append(_finish(table, pd.concat([runs, full]), lead, COLUMN_MARKS))
    return tables


EQ5_NOTE = ("ST-Prune's stationarity weights (eq. 5) go to the kept redundant samples; when the informative set "
            "alone fills the budget (its default overflow=top, typical at r ≤ 30%), no redundant sample is kept, "
            "no visit is reweighted, and ST-Prune coincides with its w/o Res. ablation.")


def _eq5_text(runs: pd.DataFrame) -> str:
    """For ST-Prune runs: the note on eq. 5 at low retention, and from the records the share of kept visits
    over the pruned epochs that carried eq. 5 weights (frame column ``eq5_weighted_share``, the
    pruner's ``report()``), naming the cells where it never applied."""
    stprune = runs[runs["method"].str.startswith("stprune") & (runs["status"] == "ok")]
    if stprune.empty:
        return ""
    if "eq5_weighted_share" not in stprune.columns or stprune["eq5_weighted_share"].isna().all():
        return EQ5_NOTE + " How often eq. 5 applied is not recorded in these runs."
    shares = stprune.dropna(subset=["eq5_weighted_share"]).groupby(
        ["method", "variant", "dataset_label", "ratio"])["eq5_weighted_share"].mean()
    never = [f"{display(variant, method)} ({dataset}, r={pct(ratio)})"
             for (method, variant, dataset, ratio), share in shares.items() if share == 0]
    applied = shares[shares > 0]
    parts = [EQ5_NOTE]
    if never:
        parts.append("Eq. 5 never applied (0% of kept visits over the pruned epochs) in: " + ", ".join(never) + ".")
    if len(applied):
        low, high = applied.min(), applied.max()
        span = pct(round(low, 3)) if low == high else f"{pct(round(low, 3))}–{pct(round(high, 3))}"
        parts.append(f"{'Elsewhere it' if never else 'It'} weighted {span} of the kept visits over the pruned "
                     "epochs (mean over runs).")
    return " ".join(parts)


def _pruning_cells(rec: dict, metric: str, full_agg: dict) -> dict:
    """The cell of one (dataset, ratio), with its change in % against full-data training."""
    cell = _cell(rec, metric)
    base = full_agg.get(rec["dataset_label"], {}).get(f"{metric}_mean", math.nan)
    if math.isfinite(base) and base != 0:
        cell.change = 100 * (cell.mean - base) / base
    return {(rec["dataset_label"], rec["ratio"]): cell}


def time_tables(df: pd.DataFrame) -> list[Table]:
    sel = _labelled(_selected(df))
    if sel.empty:
        return []
    datasets = sorted(sel["dataset_label"].unique())
    columns = [Column((d, m), d, LABELS[m], decimals=2, better=None if m == "speedup" else "lower")
               for d in datasets for m in ("mae", "rmse", "mape", "cost_s", "speedup")]
    agg = aggregate(sel, ["family", "method", "variant", "budget_kind", "ratio", "budget_label", "dataset_label"])
    full_cost = {rec["dataset_label"]: rec["cost_s_mean"] for rec in agg.to_dict("records") if rec["family"] == "full"}
    rows: dict[tuple, tuple] = {}
    for rec in agg.to_dict("records"):
        key = (rec["variant"], rec["budget_label"])
        if key not in rows:
            is_full = rec["budget_kind"] == "full"
            label = display(rec["variant"], rec["method"]) + ("" if is_full else f", {rec['budget_label']}")
            row = Row(" @ ".join(key), label, ranked=not is_full and not _control(rec["variant"]))
            rows[key] = (rec["family"], (rec["variant"], rec["budget_kind"], rec["ratio"]), row)
        cells = {(rec["dataset_label"], m): _cell(rec, m) for m in ("mae", "rmse", "mape", "cost_s")}
        cells[(rec["dataset_label"], "speedup")] = _speedup(rec, full_cost.get(rec["dataset_label"], math.nan))
        rows[key][2].cells.update(cells)
    table = Table("time", "Accuracy and training cost", "", "Method, budget", columns,
                  _family_groups(list(rows.values())))
    lead = (f"{ABSOLUTE} Time: wall-clock seconds to obtain the model, condensation + training; speed-up: "
            "full-data time / time (the whole cost, with validation passes, and the break-even count: the cost "
            "table).")
    return [_finish(table, sel, lead, COLUMN_MARKS.replace("column", "error or time column"))]


def _speedup(rec: dict, full_cost: float) -> Cell:
    cost = rec["cost_s_mean"]
    ok = rec["status"] == "ok" and math.isfinite(full_cost) and math.isfinite(cost) and cost > 0
    status = "missing" if rec["status"] == "ok" and not ok else rec["status"]
    return Cell(mean=full_cost / cost if ok else math.nan, n=int(rec["n_ok"]), status=status, unmet=_unmet(rec))



# --- scores against random and full data, the whole cost, seed spread, relabelling control ---------

SCORE_LEAD = (
    "Rel. RMSE: relative RMSE on the test split (STemDist eq. 6). vs random: improvement over random, "
    "100 (e_random − e) / e_random in %, with e_random the Random run of the same budget, dataset, condensation "
    "seed, evaluation seed and evaluation model (its group where the set's model is a location-encoder form, the "
    "exact model preferred; positive: better than random). Gap closed: (e_random − e) / (e_random − e_full), with "
    "e_full the full-data run of the same evaluation seed and model: 1 as good as full "
    "data, 0 as good as random, negative worse than random. Both are computed per seed pair, then mean ± std "
    "over the pairs; a pair whose runs were evaluated with different settings is refused (protocol audit).")


def scores_tables(df: pd.DataFrame) -> list[Table]:
    sel = _selected(df)
    comp, full = sel[sel["budget_kind"] == "compression"], sel[sel["budget_kind"] == "full"]
    tables = []
    for ratio in sorted(comp["ratio"].unique()):
        at_ratio = comp[comp["ratio"] == ratio]
        if (at_ratio["method"] == "random").all():      # nothing to score against random
            continue
        runs = _labelled(pd.concat([at_ratio, full]))
        datasets = sorted(runs["dataset_label"].unique())
        searched = bool((runs["lr_search"] != "").any())
        columns = []
        for d in datasets:
            columns += [Column((d, "err"), d, LABELS["rel_rmse"]), Column((d, "ior"), d, "vs random (%)", 1, "higher"),
                        Column((d, "gap"), d, "Gap closed", 2, "higher")]
            columns += [Column((d, "lr"), d, "LR", better=None)] if searched else []
        agg = aggregate(runs, ["family", "method", "variant", "dataset_label"])
        cells = {(c["variant"], c["dataset_label"]): c for c in scores.cell_scores(runs).to_dict("records")}
        chosen = _chosen_lr(runs)

        def cells_of(rec, cells=cells, chosen=chosen):
            d, out = rec["dataset_label"], {}
            out[(d, "err")] = _cell(rec, "rel_rmse")
            if rec["family"] == "full":
                out[(d, "ior")] = _headroom(runs, d, ratio)
                out[(d, "gap")] = Cell(text="1 (def.)", n=1, status="ok")
            elif rec["variant"] == "random":       # the reference itself
                out[(d, "ior")] = Cell(text="0 (def.)", n=1, status=rec["status"])
                out[(d, "gap")] = Cell(text="0 (def.)", n=1, status=rec["status"])
            else:
                score = cells.get((rec["variant"], d))
                out[(d, "ior")] = _score_cell(rec, score, "improvement")
                out[(d, "gap")] = _score_cell(rec, score, "gap_closed")
            if (rec["variant"], d) in chosen:
                out[(d, "lr")] = Cell(text=chosen[(rec["variant"], d)], n=1, status="ok")
            return out

        groups = _method_rows(agg, cells_of)
        for _, rows in groups:
            for row in rows:
                row.ranked = row.ranked and not row.key.startswith("random")
        table = Table(f"scores_{slug(ratio)}", f"Scores against random and full data at a compression ratio of "
                      f"{pct(ratio)}", "", "Method", columns, groups)
        lead = " ".join(p for p in (SCORE_LEAD, _pair_notes(scores.paired_scores(runs))) if p)
        ranking = ("Best per column in bold, second best underlined (lower error, higher improvement and gap closed "
                   "are better; Random, relabelling controls and Original data not ranked).")
        tables.append(_finish(table, runs, lead, ranking, lr_cells="the LR column"))
    return tables


def _score_cell(rec: dict, score: dict | None, value: str) -> Cell:
    if rec["status"] != "ok":
        return Cell(status=rec["status"], n=int(rec["n_ok"]))
    if score is None or not score["n_scored"]:
        refused = score is not None and score["n_refused"] > 0
        return Cell(text="refused" if refused else "unpaired", n=0, status="ok")
    if not score[f"{value}_n"]:
        return Cell(text="undef.", n=0, status="ok")
    return Cell(mean=score[f"{value}_mean"], std=score[f"{value}_std"], n=int(score[f"{value}_n"]), status="ok")


def _headroom(runs: pd.DataFrame, dataset: str, ratio: float) -> Cell:
    """Original data's improvement over the same-seed random at ``ratio`` (what a set could reach)."""
    ok = runs[(runs["status"] == "ok") & (runs["dataset_label"] == dataset) & (runs["control_of"] == "")
              & (runs["targets"] != "hard")]
    full, rand = ok[ok["budget_kind"] == "full"], ok[(ok["method"] == "random") & (ok["ratio"] == ratio)]
    values = []
    for f in full.to_dict("records"):
        match = rand[rand["eval_seed"] == f["eval_seed"]]
        if (match["seed"] == f["seed"]).any():       # else every condensation seed of that evaluation seed
            match = match[match["seed"] == f["seed"]]
        if len(match) and match["rel_rmse"].mean() > 0:
            e = match["rel_rmse"].mean()
            values.append(100 * (e - f["rel_rmse"]) / e)
    if not values:
        return Cell(text="unpaired", n=0, status="ok")
    series = pd.Series(values)
    return Cell(mean=series.mean(), std=series.std(ddof=1) if len(series) > 1 else math.nan, n=len(series),
                status="ok")


def _chosen_lr(runs: pd.DataFrame) -> dict:
    """(variant, dataset) -> the evaluation learning rate(s) the search chose, where it was searched."""
    ok = runs[(runs["status"] == "ok") & (runs["lr_search"] != "")]
    out = {}
    for (variant, dataset), part in ok.groupby(["variant", "dataset_label"]):
        counts = part["lr_chosen"].dropna().value_counts()
        text = " / ".join(f"{lr:g}" + (f" ×{n}" if len(counts) > 1 else "") for lr, n in sorted(counts.items()))
        out[(variant, dataset)] = text or "not recorded"
    return out


def _pair_notes(pairs: pd.DataFrame) -> str:
    """The caption's account of runs without a score: refused pairs (named), unpaired runs, undefined gaps."""
    parts = []
    refused = pairs[pairs["refused"] != ""]
    if len(refused):
        named = [f"{r['variant']} ({r['dataset_label']}, {r['budget_label']}, {r['model']}, seed {r['seed']}) "
                 f"against {r['refused']}" for r in refused.to_dict("records")]
        parts.append(f"refused: {len(refused)} run(s) evaluated unlike their reference: " + "; ".join(named))
    missing = pairs[pairs["missing"] != ""]
    if len(missing):
        what = "; ".join(f"{n} without a same-seed {w}" for w, n in sorted(missing["missing"].value_counts().items()))
        parts.append(f"unpaired: {what} (no score)")
    scored = pairs[(pairs["refused"] == "") & (pairs["missing"] == "")]
    undefined = int(scored["gap_closed"].isna().sum())
    if undefined:
        parts.append(f"undef.: {undefined} pair(s) whose random was already as good as full data (no gap to close)")
    if not parts:
        return ""
    return "Runs without a score: " + "; ".join(parts) + "."


COST_LEAD = (
    "Seconds per model, mean ± std over runs. Set-up: the part of the condensation the method reports as set-up "
    "(expert trajectories built, or reused from a cache and charged to the run, teacher training, proxy models, "
    "clustering, CRAIG's warm-up; 0 where none is reported). Condense: the whole condensation (a pruner's own "
    "set-up for dynamic pruning), set-up included and a reused cache charged once, never added twice. Eval. train: "
    "the evaluation model's training plus its validation passes. Total: condense + eval. train. Peak memory: the "
    "largest peak over all recorded phases (prepare, condense, train, validate, evaluate). Break-even k: the "
    "smallest number of downstream trainings with condense + k × eval. train ≤ k × eval. train of Original data, "
    "i.e. ⌈condense / (train_full − train_reduced)⌉; never: the reduced set trains no faster than full data. With an "
    "evaluation-LR search (lr_search), the training at every rate of its grid counts in eval. train, as recorded.")


def cost_tables(df: pd.DataFrame) -> list[Table]:
    sel = _labelled(_selected(df))
    if sel.empty:
        return []
    datasets = sorted(sel["dataset_label"].unique())
    gpu = bool((sel["peak_kind"] == "GPU").any())
    spec = (("setup", "Set-up (s)", 2, None), ("condense", "Condense (s)", 2, None),
            ("train", "Eval. train (s)", 2, None), ("total", "Total (s)", 2, "lower"),
            ("peak", "Peak mem. (MiB)", 0, "lower"), ("k", "Break-even k", 0, None))
    columns = [Column((d, key), d, label, decimals, better) for d in datasets for key, label, decimals, better in spec]
    agg = aggregate(sel, ["family", "method", "variant", "budget_kind", "ratio", "budget_label", "dataset_label"])
    full_train = {rec["dataset_label"]: rec["t_eval_train_mean"] for rec in agg.to_dict("records")
                  if rec["family"] == "full" and rec["status"] == "ok"}
    rows: dict[tuple, tuple] = {}
    for rec in agg.to_dict("records"):
        key = (rec["variant"], rec["budget_label"])
        is_full = rec["budget_kind"] == "full"
        if key not in rows:
            label = display(rec["variant"], rec["method"]) + ("" if is_full else f", {rec['budget_label']}")
            rows[key] = (rec["family"], (rec["variant"], rec["budget_kind"], rec["ratio"]),
                         Row(" @ ".join(key), label, ranked=not is_full and not _control(rec["variant"])))
        d = rec["dataset_label"]
        cells = {(d, "train"): _cost_cell(rec, "t_eval_train"), (d, "total"): _cost_cell(rec, "total_cost_s")}
        peak = _cost_cell(rec, "peak_bytes")
        peak.mean, peak.std = peak.mean / 2**20, peak.std / 2**20
        cells[(d, "peak")] = peak
        if is_full:
            for part in ("setup", "condense"):
                cells[(d, part)] = Cell(text="none", n=1, status=rec["status"])
            cells[(d, "k")] = Cell(text="ref.", n=1, status=rec["status"])
        else:
            cells[(d, "setup")], cells[(d, "condense")] = _cost_cell(rec, "setup_s"), _cost_cell(rec, "t_condense")
            cells[(d, "k")] = _break_even_cell(rec, full_train.get(d, math.nan))
        rows[key][2].cells.update(cells)
    table = Table("cost", "The whole cost of a model and when a reduced set pays for itself", "", "Method, budget",
                  columns, _family_groups(list(rows.values())))
    ok = sel[sel["status"] == "ok"]
    notes = [f"Peak memory: {'GPU memory allocated where recorded, else process RSS' if gpu else 'process RSS'}."]
    unsplit = int((~ok["validate_recorded"].astype(bool)).sum())
    if unsplit:
        notes.append(f"{unsplit} of {len(ok)} runs record no separate validation time (older records: inside the "
                     "training time).")
    return [_finish(table, sel, " ".join([COST_LEAD] + notes),
                    "Lowest total and peak memory per column in bold, second underlined (Original data not ranked).")]


def _cost_cell(rec: dict, value: str) -> Cell:
    """A cost cell; "not recorded" where the cell's runs finished without recording it."""
    cell = _cell(rec, value)
    if cell.status == "ok" and not math.isfinite(cell.mean):
        cell.text = "not recorded"
    return cell


def _break_even_cell(rec: dict, train_full: float) -> Cell:
    if rec["status"] != "ok":
        return Cell(status=rec["status"], n=int(rec["n_ok"]))
    condense, train = rec["t_condense_mean"], rec["t_eval_train_mean"]
    if not math.isfinite(train_full):
        return Cell(text="no full run", n=1, status="ok")
    if not (math.isfinite(condense) and math.isfinite(train)):
        return Cell(text="not recorded", n=1, status="ok")
    k = scores.break_even(condense, train, train_full)
    return Cell(text="never", n=1, status="ok") if k is None else Cell(mean=float(k), n=1, status="ok")


def seed_tables(df: pd.DataFrame) -> list[Table]:
    sel = _labelled(_selected(df))
    spread = scores.seed_spread(sel)
    if spread.empty:
        return []
    datasets = sorted(spread["dataset_label"].unique())
    spec = (("mean", LABELS["rel_rmse"]), ("cstd", "Std, condensation seeds"), ("estd", "Std, evaluation seeds"),
            ("n", "Seeds"))
    columns = [Column((d, key), d, label, better=None) for d in datasets for key, label in spec]
    rows: dict[tuple, tuple] = {}
    for rec in spread.to_dict("records"):
        key = (rec["variant"], rec["budget_label"])
        if key not in rows:
            label = display(rec["variant"], rec["method"]) + ("" if rec["budget_kind"] == "full"
                                                              else f", {rec['budget_label']}")
            rows[key] = (rec["family"], (rec["variant"], rec["budget_kind"], rec["ratio"]), Row(" @ ".join(key), label))
        d = rec["dataset_label"]
        rows[key][2].cells.update({
            (d, "mean"): Cell(mean=rec["mean"], n=1, status="ok"),
            (d, "cstd"): Cell(mean=rec["condense_std"], n=1, status="ok"),
            (d, "estd"): Cell(mean=rec["eval_std"], n=1, status="ok"),
            (d, "n"): Cell(text=f"{rec['n_condense']} × {rec['n_eval']}", n=1, status="ok")})
    table = Table("seeds", "Spread from condensation seeds and from evaluation seeds", "", "Method, budget", columns,
                  _family_groups(list(rows.values())))
    lead = ("Relative RMSE on the test split (STemDist eq. 6) of cells run with several condensation seeds (seed) and "
            "several evaluation-model seeds (eval_seed) per condensation seed. Mean: over all runs of the cell; std, "
            "condensation seeds: sample std over condensation seeds of the per-seed mean; std, evaluation seeds: mean "
            "over condensation seeds of the sample std over their evaluation seeds; seeds: condensation × evaluation "
            "seeds.")
    return [_finish(table, sel, lead, "", counts=False)]


def control_tables(df: pd.DataFrame) -> list[Table]:
    sel = _labelled(_selected(df))
    pairs = scores.control_pairs(sel)
    if pairs.empty:
        return []
    datasets = sorted(pairs["dataset_label"].unique())
    spec = (("method", "Method", 3), ("control", "Control", 3), ("hard", "Hard targets", 3), ("random", "Random", 3),
            ("owed", "Owed to expert (%)", 1), ("share", "Share of gain", 2))
    columns = [Column((d, key), d, label, decimals, better=None) for d in datasets for key, label, decimals in spec]
    rows: dict[tuple, tuple] = {}
    for rec in pairs.to_dict("records"):
        key = (rec["variant"], rec["budget_label"])
        if key not in rows:
            rows[key] = (rec["family"], (rec["variant"], rec["budget_kind"], rec["ratio"]),
                         Row(" @ ".join(key), display(rec["variant"], rec["method"]) + f", {rec['budget_label']}"))
        d = rec["dataset_label"]
        values = {"method": ("method_error", "n_method"), "control": ("control_error", "n_control"),
                  "hard": ("hard_error", "n_hard"), "random": ("random_error", "n_random"),
                  "owed": ("owed_to_expert", "n_control"), "share": ("share_of_gain", "n_control")}
        for column, (value, count) in values.items():
            ok = math.isfinite(rec[value])
            rows[key][2].cells[(d, column)] = Cell(mean=rec[value], n=int(rec[count]) if ok else 0,
                                                   status="ok" if ok else "missing")
    table = Table("control", "Relabelling control: how much of a method's gain its expert's labels give", "",
                  "Method, budget", columns, _family_groups(list(rows.values())))
    lead = ("Relative RMSE on the test split (STemDist eq. 6), mean over runs. Method: the method's own runs "
            "(targets as condensed); Control: random real windows of the same budget relabelled by the same "
            "expert (runs with control_of = the method); Hard targets: the method's set with its targets replaced"
            " by the real data's (targets: hard); Random: plain random windows of the budget. Owed to expert: 100"
            " (e_random − e_control) / e_random, the part of random's error the relabelling alone removes; share "
            "of gain: (e_random − e_control) / (e_random − e_method), the part of the method's improvement over "
            "random its relabelling alone gives (1: all of it).")
    shown = sel["variant"].isin(pairs["variant"]) | (sel["control_of"] != "") | (sel["targets"] == "hard")
    return [_finish(table, sel[shown], lead, "", counts=False)]


BUILDERS = {"main": main_tables, "scores": scores_tables, "cross-model": cross_model_tables, "sweeps": sweep_tables,
            "pruning": pruning_tables, "time": time_tables, "cost": cost_tables, "seeds": seed_tables,
            "control": control_tables}
