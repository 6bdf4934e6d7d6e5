"""`stbench report`: golden tables from a frozen store, LaTeX that compiles, figures, published numbers.

Regenerate the golden files after an intended change with
``STBENCH_UPDATE_GOLDEN=1 python -m pytest tests/test_report.py`` and review the diff.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stbench.cli import main
from stbench.report import TABLES, write_report
from stbench.report.frame import aggregate, default_split, runs_frame
from stbench.report.plots import PLOTS, colours, fit_slope, pareto_front, scalability
from stbench.report.reference import default_dir, load_reference

HERE = Path(__file__).parent
STORE = HERE / "fixtures" / "report_store"
GOLDEN = HERE / "golden" / "report"
UPDATE = os.environ.get("STBENCH_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def tables_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(STORE, out, list(TABLES), [], default_dir(), say=lambda line: None)
    if UPDATE:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        shutil.copytree(out / "tables", GOLDEN)
    return out / "tables"


def test_every_table_matches_its_golden_file(tables_dir):
    produced = sorted(p.name for p in tables_dir.iterdir())
    assert produced == sorted(p.name for p in GOLDEN.iterdir()), "tables added or lost: update the goldens"
    for name in produced:
        assert (tables_dir / name).read_text() == (GOLDEN / name).read_text(), f"{name} differs from its golden file"


def test_tables_show_oom_failed_partial_and_single_runs(tables_dir):
    main = (tables_dir / "main_0p5pct.md").read_text()
    assert "| DC " in main and "O.O.M." in main and "O.O.M.: out of memory" in main
    k_center = next(line for line in main.splitlines() if line.startswith("| K-Center"))
    assert "± " in k_center.split("|")[2] and "±" not in k_center.split("|")[4]   # single seed: no std
    assert "†" in main                                                            # 1 of 2 seeds incompatible
    one = (tables_dir / "main_1pct.md").read_text()
    assert "failed" in one and "failed: the run raised an error" in one
    assert "Original data" in one and "Mean ± std over 1–2 runs" in one
    tex = (tables_dir / "main_0p5pct.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and r"\underline{" in tex and "$\\pm$" in tex
    assert "compression ratio of 0.5\\%" in tex and "STemDist eq. 6" in tex


def test_sweep_pruning_and_time_tables(tables_dir):
    split = (tables_dir / "sweep-split_stemdist_1pct.md").read_text()
    assert "(2%, 50%)" in split and "(10%, 10%)" in split and "K = 4" in split
    k = (tables_dir / "sweep-k_stemdist_1pct.md").read_text()
    assert "split 10% × 10%" in k and all(f"K {v} " in k for v in (2, 4, 8))
    pruning = (tables_dir / "pruning_mape.md").read_text()
    assert "(+" in pruning and "ST-Prune" in pruning and "Coreset selection" in pruning
    assert "Speed-up" in (tables_dir / "time.md").read_text()
    assert (tables_dir / "cross-model_0p5pct.md").read_text().count("| Original data") == 2


def test_reference_comparison_states_matches_and_gaps(tables_dir):
    text = (tables_dir / "reference_comparison.md").read_text()
    assert "measured cells match a published one" in text
    assert "No published numbers exist for our datasets synthetic-traffic" in text
    assert "preset smoke, not the papers' protocol" in text
    assert "| III(a)" in text and "| V(b)" in text


def test_no_match_is_said_plainly(tmp_path):
    records = [r for r in _fixture_records() if r["dataset"] == "synthetic-traffic"]
    store = _store(tmp_path, records)
    write_report(store, tmp_path / "out", ["reference"], [], default_dir(), say=lambda line: None)
    text = (tmp_path / "out" / "tables" / "reference_comparison.md").read_text()
    assert "**No measured cell matches a published one**" in text
    assert not (tmp_path / "out" / "tables" / "reference_comparison.csv").exists()


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex not installed (apt-get install texlive-latex-base texlive-latex-recommended)")
def test_every_latex_table_compiles(tables_dir, tmp_path):
    for tex in sorted(tables_dir.glob("*.tex")):
        doc = tmp_path / f"doc_{tex.stem}.tex"
        doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                       f"\\input{{{tex}}}\n\\end{{document}}\n")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{tex.name} does not compile:\n{done.stdout[-1500:]}"
        assert (tmp_path / f"doc_{tex.stem}.pdf").stat().st_size > 0


def test_figures_are_written_as_pdf_and_png(tmp_path):
    lines = []
    write_report(STORE, tmp_path, [], list(PLOTS), say=lines.append)
    for name in PLOTS:
        if name == "scalability":   # the fixture has one size per dataset
            assert "skipped figure scalability: " in "\n".join(lines)
            continue
        for suffix in (".pdf", ".png"):
            assert (tmp_path / "figures" / f"{name}{suffix}").stat().st_size > 1000, name
    assert "figures/pareto.png" in (tmp_path / "report.md").read_text()


def test_scalability_fits_log_log_slopes(tmp_path):
    base = next(r for r in _fixture_records() if r["method"] == "stemdist" and r["model"] == "mtgnn-le")
    records = []
    for i, locations in enumerate((100, 200, 400, 800)):
        rec = copy.deepcopy(base)
        rec["run_id"] = f"scale{i}"
        rec["dataset_shape"] = [1000, locations, 1]
        rec["time_s"]["condense"] = 0.01 * locations
        records.append(rec)
    df = runs_frame(records)
    fig = scalability(df, colours(df["method"]))
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert texts == ["STemDist 0.5% on gba: slope 1.00"]
    assert fit_slope(np.array([1, 2, 4]), np.array([5, 20, 80])) == pytest.approx(2.0)


def test_pareto_front_keeps_points_nothing_beats():
    cost = np.array([1.0, 2.0, 3.0, 0.5, 4.0])
    error = np.array([0.5, 0.4, 0.45, 0.9, 0.1])
    front_cost, front_error = pareto_front(cost, error)
    assert front_cost.tolist() == [0.5, 1.0, 2.0, 4.0] and front_error.tolist() == [0.9, 0.5, 0.4, 0.1]


def test_aggregate_omits_std_for_one_run_and_keeps_status():
    df = runs_frame(_fixture_records())
    cells = aggregate(df, ["dataset", "method", "budget_label", "model_group"]).set_index(
        ["dataset", "method", "budget_label", "model_group"])
    single = cells.loc[("synthetic-traffic", "kcenter", "0.5%", "mtgnn")]
    assert single["n_ok"] == 1 and math.isnan(single["rel_mae_std"]) and math.isfinite(single["rel_mae_mean"])
    assert cells.loc[("gba", "dc", "0.5%", "mtgnn"), "status"] == "oom"
    partial = cells.loc[("gba", "dc", "1%", "mtgnn")]
    assert partial["status"] == "ok" and partial["partial"] and partial["n_runs"] == 2
    assert cells.loc[("synthetic-traffic", "mtt", "1%", "mtgnn"), "status"] == "failed"


def test_frame_derives_split_model_group_and_default_budget():
    df = runs_frame(_fixture_records())
    stem = df[(df["method"] == "stemdist") & (df["budget_label"] == "0.5%") & (df["model"] == "mtgnn-le")]
    assert stem["model_group"].eq("mtgnn").all()
    assert (stem["temporal"].iloc[0], stem["spatial"].iloc[0]) == pytest.approx((0.1, 0.05))
    swept = df["budget_label"] == "1%=0.02x0.5"
    assert not default_split(df)[swept].any() and default_split(df)[~df["explicit_split"]].all()


def test_published_numbers_match_the_papers_on_spot_checks():
    ref = load_reference(default_dir())
    assert set(ref["status"]) == {"ok", "oom"} and ref.loc[ref["status"] == "ok", "mean"].notna().all()

    def value(table, dataset, method, metric, budget=None, model=None, k=None):
        rows = ref[(ref["table"] == table) & (ref["dataset"] == dataset) & (ref["method"] == method)
                   & (ref["metric"] == metric)]
        for column, wanted in (("budget", budget), ("model", model), ("k", k)):
            if wanted is not None:
                rows = rows[rows[column] == wanted]
        assert len(rows) == 1, (table, dataset, method, metric, len(rows))
        row = rows.iloc[0]
        return row["status"] if row["status"] != "ok" else (row["mean"], row["std"])

    # STemDist Table III (a) 0.5% and (b) 1%: 19 methods x 5 datasets x 2 metrics each
    assert (ref["table"] == "III(a)").sum() == 190 and (ref["table"] == "III(b)").sum() == 190
    assert value("III(a)", "gba", "random", "rel_mae") == (0.380, 0.095)
    assert value("III(a)", "ca", "full", "rel_mae") == (0.120, 0.002)
    assert value("III(a)", "era5", "mtt", "rel_rmse") == "oom"
    assert value("III(a)", "gla", "mtt", "rel_mae") == (0.343, 0.058)
    assert value("III(b)", "gla", "mtt", "rel_mae") == "oom"
    assert value("III(b)", "cams", "stemdist-1feat", "rel_rmse") == (0.644, 0.003)
    assert value("III(b)", "ca", "stemdist", "rel_mae") == (0.222, 0.002)
    # Table IV (cross-model) and appendix Table VI
    assert value("IV", "ca", "full", "rel_mae", model="stgcn") == (0.371, 0.348)
    assert value("IV", "gla", "dc", "rel_rmse", model="gwnet") == (0.312, 0.009)
    assert value("VI (appendix)", "cams", "stemdist", "rel_rmse", model="agcrn") == (0.669, 0.010)
    assert value("VI (appendix)", "gba", "full", "rel_rmse", model="agcrn") == (0.197, 0.008)
    assert value("VI (appendix)", "era5", "full", "rel_mae", model="agcrn") == "oom"
    # Table V / VIII sweeps
    assert value("V(a)", "gla", "stemdist", "rel_rmse", budget="1%=0.1x0.1") == (0.272, 0.001)
    assert value("V(b)", "gba", "stemdist", "rel_rmse", k=2) == (0.352, 0.007)
    assert value("VIII(b) (appendix)", "era5", "stemdist", "rel_rmse", k=16) == (0.439, 0.008)
    assert value("VIII(a) (appendix)", "cams", "stemdist", "rel_rmse", budget="0.5%=0.25x0.02") == (0.649, 0.004)
    # ST-Prune Table 1 (MAPE), B.1 (MAE), B.2 (RMSE), Table 2
    t1 = ref[ref["table"] == "1"]
    assert len(t1) == 18 * 8 + 2
    hard = t1[(t1["dataset"] == "pems08") & (t1["method"] == "hard-random") & (t1["budget"] == "r=10%")].iloc[0]
    assert (hard["mean"], hard["change_pct"], hard["paper_label"]) == (13.93, 26.87, "Hard Random")
    ours = t1[(t1["dataset"] == "urbanev") & (t1["method"] == "stprune") & (t1["budget"] == "r=10%")].iloc[0]
    assert (ours["mean"], ours["change_pct"]) == (29.56, -0.91)
    assert value("1", "pems08", "full", "mape") == (10.98, 0.23)
    assert value("B.1 (appendix)", "pems08", "infobatch", "mae", budget="r=10%")[0] == 19.03
    assert value("B.2 (appendix)", "urbanev", "ucb", "rmse", budget="r=70%")[0] == 7.30
    assert value("2", "largest-gla", "stprune", "time_h", budget="r=1%")[0] == 7.12
    assert value("2", "largest-gba", "soft-random", "mape")[0] == 39.30


def test_cli_report_prints_what_it_wrote(tmp_path, capsys):
    assert main(["report", "--results", str(STORE), "--out", str(tmp_path), "--tables", "main,sweeps",
                 "--plots", "pareto"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'tables' / 'main_0p5pct.tex'}" in out
    assert f"wrote {tmp_path / 'figures' / 'pareto.pdf'}" in out and "cross-model" not in out


def test_cli_report_skips_tables_without_data(tmp_path, capsys):
    records = [r for r in _fixture_records() if r["budget"] is None or r["budget"]["kind"] == "compression"]
    store = _store(tmp_path, [r for r in records if r["model"].startswith("mtgnn")])
    assert main(["report", "--results", str(store), "--tables", "all", "--plots", "none"]) == 0
    out = capsys.readouterr().out
    assert "skipped table pruning: no run with a retention budget" in out
    assert "skipped table cross-model" in out
    assert not list((store / "report" / "tables").glob("pruning*"))


@pytest.mark.parametrize("setup", ["missing", "empty", "unreadable"])
def test_cli_report_fails_in_one_line_on_a_bad_store(tmp_path, capsys, setup):
    store = tmp_path / "store"
    store.mkdir()
    if setup == "empty":
        (store / "runs.jsonl").write_text("")
    elif setup == "unreadable":
        (store / "runs.jsonl").mkdir()
    assert main(["report", "--results", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stbench: error: ") and "\n" not in err


def test_cli_report_rejects_unknown_names(capsys):
    assert main(["report", "--results", str(STORE), "--tables", "main,nope"]) == 2
    assert "unknown table nope" in capsys.readouterr().err


def _fixture_records() -> list[dict]:
    return [json.loads(line) for line in (STORE / "runs.jsonl").read_text().splitlines()]


def _store(tmp_path: Path, records: list[dict]) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    (store / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return store


def test_a_pruner_that_missed_its_retention_is_marked_and_not_ranked(tmp_path):
    records = [r for r in _fixture_records() if r["dataset"] == "gba"]
    template = next(r for r in records if r["method"] == "soft-random" and r["budget"]["ratio"] == 0.1)
    missed = copy.deepcopy(template)
    missed.update(method="infobatch", run_id="infobatch-missed", retention_pruned_epochs=0.416)
    missed["metrics"]["test"] = {k: v / 10 for k, v in missed["metrics"]["test"].items()}  # far the lowest error
    write_report(_store(tmp_path, records + [missed]), tmp_path / "out", ["pruning", "time"], [], default_dir(),
                 say=lambda line: None)
    tables = tmp_path / "out" / "tables"
    mae = (tables / "pruning_mae.md").read_text()
    row = next(line for line in mae.splitlines() if line.startswith("| InfoBatch"))
    assert "‡" in row and "**" not in row and "<u>" not in row
    assert "InfoBatch (gba): kept 41.6% for r=10%" in mae
    assert "$^\\ddagger$" in (tables / "pruning_mae.tex").read_text()
    time_row = next(line for line in (tables / "time.md").read_text().splitlines() if line.startswith("| InfoBatch"))
    assert "‡" in time_row and "**" not in time_row.split("|")[2]
    assert time_row.split("|")[-2].strip().endswith("‡")                     # its speed-up too
    met = copy.deepcopy(missed)
    met.update(retention_pruned_epochs=0.105)                                  # within the 1% tolerance
    (tmp_path / "b").mkdir()
    write_report(_store(tmp_path / "b", records + [met]), tmp_path / "out-b", ["pruning"], [], default_dir(),
                 say=lambda line: None)
    row = next(line for line in (tmp_path / "out-b" / "tables" / "pruning_mae.md").read_text().splitlines()
               if line.startswith("| InfoBatch"))
    assert "‡" not in row and "**" in row


def test_on_the_total_basis_a_cell_is_marked_by_its_share_of_visits_over_all_epochs(tmp_path):
    """Total-basis records: an annealing pruner that visited 19% of all epochs' samples for r=10% is
    marked with that share (whatever its pruned epochs kept); one within a point is ranked; a store
    with both bases gets one table per basis, each captioned with its basis."""
    records = [r for r in _fixture_records() if r["dataset"] == "gba"]
    template = next(r for r in records if r["method"] == "soft-random" and r["budget"]["ratio"] == 0.1)
    total = []
    for method, visited in (("stprune", 0.19), ("soft-random", 0.1), ("hard-random", 0.105)):
        r = copy.deepcopy(template)
        r.update(method=method, family="selection" if method == "hard-random" else "pruning",
                 run_id=f"{method}-total", budget_achieved=visited, retention_pruned_epochs=0.1)
        r["budget"] = dict(r["budget"], basis="total")
        r["metrics"]["test"] = {k: v / 10 for k, v in r["metrics"]["test"].items()}
        total.append(r)
    write_report(_store(tmp_path, records + total), tmp_path / "out", ["pruning"], [], default_dir(),
                 say=lambda line: None)
    tables = tmp_path / "out" / "tables"
    assert {p.name for p in tables.glob("pruning_mae*.md")} == {"pruning_mae_total.md", "pruning_mae_pruned.md"}
    mae = (tables / "pruning_mae_total.md").read_text()
    assert "(total basis)" in mae and "sample visits over all epochs" in mae
    rows = {line.split("|")[1].strip(): line for line in mae.splitlines() if line.startswith("| ")}
    assert "‡" in rows["ST-Prune"] and "ST-Prune (gba): visited 19% for r=10%" in mae
    assert "‡" not in rows["Soft Random"] and "‡" not in rows["Hard Random"]
    lines = mae.splitlines()
    assert lines.index(rows["Hard Random"]) < lines.index(rows["Soft Random"])   # static rows before dynamic
    assert "(pruned basis)" in (tables / "pruning_mae_pruned.md").read_text()


# --- captions from the records: the tested checkpoint, how often ST-Prune's eq. 5 applied ----------

from stbench.report import tables as report_tables  # noqa: E402


def _frame_with(**columns):
    """The fixture's runs frame with extra per-run columns (as the frame derives them from the records)."""
    df = runs_frame(_fixture_records())
    for name, value in columns.items():
        df[name] = value(df) if callable(value) else value
    return df


def _main_caption(df) -> str:
    return next(t for t in report_tables.main_tables(df) if t.name == "main_1pct").caption


def test_captions_say_which_validation_metric_selected_the_tested_checkpoint():
    assert "Tested checkpoint: not recorded in these runs." in _main_caption(runs_frame(_fixture_records()))
    rmse = _main_caption(_frame_with(select="best", select_metric="rel_rmse"))
    assert "Tested: the checkpoint with the best validation Rel. RMSE." in rmse
    mae = _main_caption(_frame_with(select="best", select_metric="rel_mae"))
    assert "Tested: the checkpoint with the best validation Rel. MAE." in mae and "Rel. RMSE." not in mae
    last = _frame_with(select=lambda df: ["last" if m == "full" else "best" for m in df["method"]],
                       select_metric="rel_rmse")
    mixed = _main_caption(last)
    assert "the checkpoint with the best validation Rel. RMSE (" in mixed
    assert "the final model (no checkpoint selection) (" in mixed
    for table in report_tables.pruning_tables(last) + report_tables.time_tables(last):
        assert "Tested: " in table.caption


def test_pruning_caption_says_how_often_eq5_applied():
    golden = (GOLDEN / "pruning_mae.md").read_text()
    assert "ST-Prune coincides with its w/o Res. ablation" in golden
    assert "How often eq. 5 applied is not recorded in these runs." in golden

    def share(df):
        return [(0.0 if r == 0.1 else 0.052) if m == "stprune" else float("nan")
                for m, r in zip(df["method"], df["ratio"])]
    caption = report_tables.pruning_tables(_frame_with(eq5_weighted_share=share))[0].caption
    assert "Eq. 5 never applied (0% of kept visits over the pruned epochs) in: ST-Prune (gba, r=10%)." in caption
    assert "Elsewhere it weighted 5.2% of the kept visits over the pruned epochs" in caption
    assert "not recorded" not in caption.split("Evaluation model")[0]
    no_stprune = [r for r in _fixture_records() if not r["method"].startswith("stprune")]
    for table in report_tables.pruning_tables(runs_frame(no_stprune)):
        assert "eq. 5" not in table.caption


def test_error_vs_visits_plots_each_pruner_at_its_achieved_share_of_all_epochs():
    from stbench.report.plots import error_vs_visits
    records = [r for r in _fixture_records() if r["dataset"] == "gba"]
    df = runs_frame(records)
    fig = error_vs_visits(df, colours(df["method"]))
    xs = {round(float(x), 6) for ax in fig.axes for line in ax.get_lines() for x in line.get_xdata()}
    achieved = {round(r["budget_achieved"], 6) for r in records
                if (r.get("budget") or {}).get("kind") == "retention" and r["status"] == "ok" and len(
                    [q for q in records if q["method"] == r["method"] and q["budget"] == r["budget"]]) == 1}
    assert achieved and achieved <= xs and 1.0 in xs                # full data sits at 1
