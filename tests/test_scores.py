"""Scores against random and full data, the whole cost and break-even, seed spread, relabelling control,
label-source marks, evaluation-LR captions and the protocol audit, on small stores written here."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from stbench.report import tables, write_report
from stbench.report.audit import audit, audit_markdown, protocol_violations
from stbench.report.frame import load_frame, runs_frame
from stbench.report.plots import colours, pareto
from stbench.report.render import to_latex, to_markdown
from stbench.report.scores import break_even, cell_scores, control_pairs, paired_scores, seed_spread

_ids = itertools.count()
FAMILY = {"random": "coreset", "kcenter": "coreset", "herding": "coreset", "dc": "distill", "dm": "distill",
          "mtt": "distill", "condtsf": "timeseries", "relabelled-random": "control", "full": "full"}
TRAIN = {"epochs": 2, "batch_size": 64, "lr": 0.001, "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0,
         "lr_schedule": "constant", "lr_min": 0.0, "loss": "mse", "grad_clip": None, "eval_every": 1,
         "eval_batch_size": 64, "select": "best", "select_metric": "rel_rmse", "location_subsets": 1}
PROTOCOL = {"select_split": "val", "scaler_fit": "train", "test_batches_dropped": 0, "test_windows": 100}


def record(method: str, rel_rmse: float, seed: int = 0, ratio: float | None = 0.01, dataset: str = "d1",
           model: str = "mtgnn", train: dict | None = None, times: dict | None = None, **extra) -> dict:
    """A finished run record as the runner writes it (every new field optional: pass it in ``extra``)."""
    full = ratio is None
    rec = {
        "run_id": f"r{next(_ids)}", "status": "ok", "error": None, "dataset": dataset,
        "dataset_shape": [1000, 10, 1], "method": method, "family": FAMILY.get(method, "coreset"),
        "method_kind": "full" if full else "static", "method_params": {}, "model": model, "seed": seed,
        "preset": "smoke", "budget": None if full else {"kind": "compression", "ratio": ratio, "spatial": None,
                                                        "temporal": None},
        "budget_label": "full" if full else f"{100 * ratio:g}%", "budget_achieved": 1.0 if full else ratio,
        "reduced_shape": [600 if full else 6, 12, 10, 1], "split_windows": {"train": 600, "val": 100, "test": 100},
        "metrics": {"test": {"rel_rmse": rel_rmse, "rel_mae": rel_rmse * 0.8, "mae": 1.0, "rmse": 2.0, "mape": 3.0}},
        "time_s": times or ({"train": 4.0, "validate": 1.0, "evaluate": 0.5, "total": 6.0} if full else
                            {"condense": 2.0, "train": 0.5, "validate": 0.2, "evaluate": 0.5, "total": 3.5}),
        "peak_rss_bytes": {"prepare": 100 * 2**20, "train": 200 * 2**20}, "peak_cuda_bytes": {},
        "train_config": dict(TRAIN, **(train or {})), "mask_zeros": False, "protocol": dict(PROTOCOL),
        "label_source": "real",
    }
    rec.update(extra)
    return rec


def scored_store() -> list[dict]:
    """Two seeds of full data, random and K-Center at 1%, and cases for every way a run goes unscored."""
    return [
        record("full", 0.30, seed=0, ratio=None), record("full", 0.32, seed=1, ratio=None),
        record("random", 0.50, seed=0), record("random", 0.54, seed=1),
        record("kcenter", 0.40, seed=0), record("kcenter", 0.47, seed=1),
        record("herding", 0.55, seed=0),                                    # worse than random
        record("herding", 0.45, seed=2),                                    # no seed-2 random or full
        record("dm", 0.35, seed=0, train={"epochs": 3}),                    # evaluated unlike its references
        # an evaluation seed of its own: paired with random and full of that evaluation seed only
        record("full", 0.20, seed=0, ratio=None, eval_seed=5), record("random", 0.60, seed=0, eval_seed=5),
        record("dc", 0.45, seed=0, eval_seed=5),
    ]


def _store(tmp_path: Path, records: list[dict]) -> Path:
    store = tmp_path / "store"
    store.mkdir()
    (store / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return store


def test_improvement_over_random_and_gap_closed_match_hand_computed_values(tmp_path):
    df = load_frame(_store(tmp_path, scored_store()))
    pairs = paired_scores(df).set_index(["variant", "seed", "eval_seed"])
    k0, k1 = pairs.loc[("kcenter", 0, 0)], pairs.loc[("kcenter", 1, 1)]
    assert (k0["random"], k0["full"]) == (0.50, 0.30) and (k1["random"], k1["full"]) == (0.54, 0.32)
    assert k0["improvement"] == pytest.approx(20.0) and k0["gap_closed"] == pytest.approx(0.5)
    assert k1["improvement"] == pytest.approx(100 * 0.07 / 0.54) and k1["gap_closed"] == pytest.approx(0.07 / 0.22)
    herding = pairs.loc[("herding", 0, 0)]
    assert herding["improvement"] == pytest.approx(-10.0) and herding["gap_closed"] == pytest.approx(-0.25)
    assert pairs.loc[("herding", 2, 2), "missing"] == "random and full data"
    assert "epochs 3 vs 2" in pairs.loc[("dm", 0, 0), "refused"] and math.isnan(pairs.loc[("dm", 0, 0), "gap_closed"])
    dc = pairs.loc[("dc", 0, 5)]                                           # eval seed 5: its own references
    assert (dc["random"], dc["full"]) == (0.60, 0.20) and dc["gap_closed"] == pytest.approx(0.15 / 0.40)
    assert pairs.loc[("random", 0, 0), "gap_closed"] == 0.0

    cells = cell_scores(df).set_index("variant")
    k = cells.loc["kcenter"]
    ior = [20.0, 100 * 0.07 / 0.54]
    gap = [0.5, 0.07 / 0.22]
    assert k["n_scored"] == 2 and k["improvement_mean"] == pytest.approx(sum(ior) / 2)
    assert k["improvement_std"] == pytest.approx(abs(ior[0] - ior[1]) / math.sqrt(2))
    assert k["gap_closed_mean"] == pytest.approx(sum(gap) / 2)
    assert k["gap_closed_std"] == pytest.approx(abs(gap[0] - gap[1]) / math.sqrt(2))
    assert cells.loc["herding", "n_scored"] == 1 and cells.loc["herding", "n_missing"] == 1
    assert cells.loc["dm", "n_refused"] == 1 and cells.loc["dm", "n_scored"] == 0


def test_scores_table_shows_improvement_and_gap_and_names_refused_pairs():
    df = runs_frame(scored_store())
    table = next(t for t in tables.scores_tables(df) if t.name == "scores_1pct")
    text = to_markdown(table)
    row = next(line for line in text.splitlines() if line.startswith("| K-Center"))
    assert "16.5 ± 5.0" in row and "0.41 ± 0.13" in row
    assert "refused" in next(line for line in text.splitlines() if line.startswith("| DM"))
    assert "0 (def.)" in next(line for line in text.splitlines() if line.startswith("| Random"))
    assert "1 (def.)" in next(line for line in text.splitlines() if line.startswith("| Original data"))
    assert "refused: 1 run(s) evaluated unlike their reference: dm (d1, 1%, mtgnn, seed 0) against random: epochs 3 " \
           "vs 2" in table.caption
    assert "unpaired: 1 without a same-seed random and full data" in table.caption
    assert "Evaluation LR: fixed at 0.001, no LR search." in table.caption
    assert r"\toprule" in to_latex(table)


def test_break_even_on_constructed_costs():
    assert break_even(10.0, 1.0, 3.0) == 5            # 10 + 5 = 15 <= 15, and 10 + 4 > 12
    assert break_even(9.0, 1.0, 4.0) == 3             # exactly even at 3
    assert break_even(0.3, 0.1, 0.2) == 3             # float slack of the division
    assert break_even(0.0, 1.0, 2.0) == 1             # no condensation: pays off from the first training
    assert break_even(10.0, 1.0, 1.0) is None         # never: trains no faster than full data
    assert break_even(10.0, 2.0, 1.0) is None
    assert break_even(math.nan, 1.0, 2.0) is None


def test_cost_table_has_total_cost_break_even_and_counts_a_reused_setup_once(tmp_path):
    full_times = {"train": 4.0, "validate": 1.0, "evaluate": 0.5, "total": 6.0}
    records = [
        record("full", 0.3, ratio=None, times=full_times),
        record("random", 0.5, times={"condense": 10.0, "train": 1.0, "validate": 0.5, "total": 12.0}),
        record("kcenter", 0.45, times={"condense": 2.0, "train": 5.0, "validate": 1.0, "total": 8.0}),
        # experts reused from a cache: 8 s charged inside time_s.condense by the runner, never added again
        record("mtt", 0.4, times={"condense": 12.0, "train": 1.0, "validate": 0.5, "total": 14.0},
               condense_info={"reused_setup_s": 8.0, "experts_build_s": 8.0, "experts_reused": True},
               peak_cuda_bytes={"condense": 3 * 2**30, "train": 2**30}),
    ]
    df = runs_frame(records)
    mtt = df[df["method"] == "mtt"].iloc[0]
    assert mtt["setup_s"] == 8.0 and mtt["t_condense"] == 12.0 and mtt["total_cost_s"] == 13.5
    assert mtt["peak_bytes"] == 3 * 2**30 and mtt["peak_kind"] == "GPU"
    table = tables.cost_tables(df)[0]
    rows = {line.split("|")[1].strip(): [_plain(c) for c in line.split("|")[2:-1]]
            for line in to_markdown(table).splitlines() if line.startswith("| ") and "Method" not in line}
    # columns: set-up, condense, eval. train, total, peak MiB, break-even k
    assert rows["Random, 1%"][3] == "11.50" and rows["Random, 1%"][5] == "3"      # ceil(10 / (5 - 1.5))
    assert rows["K-Center, 1%"][5] == "never"                                     # 6 s >= full's 5 s
    assert rows["MTT, 1%"][:4] == ["8.00", "12.00", "1.50", "13.50"] and rows["MTT, 1%"][4] == "3072"
    assert rows["MTT, 1%"][5] == "4"                                              # ceil(12 / 3.5)
    assert rows["Original data"][5] == "ref."
    assert "GPU memory allocated where recorded" in table.caption
    fig = pareto(df, colours(df["method"]))
    assert "total cost" in fig.axes[0].get_xlabel() and "validation" in fig.axes[0].get_xlabel()
    xs = sorted(float(x) for ax in fig.axes for c in ax.collections for x, _ in c.get_offsets())
    assert xs == [5.0, 8.0, 11.5, 13.5]


def _plain(cell: str) -> str:
    """A Markdown cell without its rank marks."""
    return cell.strip().replace("<u>", "").replace("</u>", "").replace("**", "")


def test_label_source_marks_and_legend_in_the_main_table():
    records = [record("full", 0.3, ratio=None), record("random", 0.5),
               record("condtsf", 0.4, label_source="expert-relabelled"),
               record("condtsf", 0.45, label_source="expert-relabelled", targets="hard"),
               record("dm", 0.42, label_source="teacher"), record("dc", 0.43, label_source="learned")]
    table = tables.main_tables(runs_frame(records))[0]
    text = to_markdown(table)
    assert "| CondTSF<sup>E</sup>" in text and "| CondTSF (hard targets)<sup>H</sup>" in text
    assert "| DM<sup>T</sup>" in text and "| DC<sup>L</sup>" in text and "| Random " in text
    assert "E: expert-relabelled, targets produced by a full-data model" in table.caption
    assert "T: teacher labels" in table.caption and "H: hard targets" in table.caption
    assert r"CondTSF$^{\mathrm{E}}$" in to_latex(table)
    unrecorded = [dict(r, label_source=None) if r["method"] == "dc" else r for r in records]
    text = to_markdown(tables.main_tables(runs_frame(unrecorded))[0])
    assert "| DC<sup>?</sup>" in text and "?: label source not recorded" in text
    none = [{k: v for k, v in r.items() if k != "label_source"} for r in records]
    caption = tables.main_tables(runs_frame(none))[0].caption
    assert "Label source of the training targets: not recorded in these runs." in caption and "<sup>" not in \
        to_markdown(tables.main_tables(runs_frame(none))[0])


def test_relabelling_control_table_pairs_the_method_its_control_and_hard_targets():
    records = [record("full", 0.30, ratio=None), record("random", 0.50),
               record("condtsf", 0.40, label_source="expert-relabelled"),
               record("random", 0.45, label_source="expert-relabelled", control_of="condtsf"),
               record("condtsf", 0.48, label_source="expert-relabelled", targets="hard")]
    df = runs_frame(records)
    pair = control_pairs(df).iloc[0]
    assert pair["variant"] == "condtsf"
    assert (pair["method_error"], pair["control_error"], pair["hard_error"], pair["random_error"]) == \
        (0.40, 0.45, 0.48, 0.50)
    assert pair["owed_to_expert"] == pytest.approx(10.0) and pair["share_of_gain"] == pytest.approx(0.5)
    table = tables.control_tables(df)[0]
    row = next(line for line in to_markdown(table).splitlines() if line.startswith("| CondTSF, 1%"))
    assert [c.strip() for c in row.split("|")[2:-1]] == ["0.400", "0.450", "0.480", "0.500", "10.0", "0.50"]
    # the control is never the random reference: CondTSF's improvement is against plain random's 0.50
    scores = paired_scores(df).set_index("variant")
    assert scores.loc["condtsf", "random"] == 0.50 and scores.loc["condtsf", "improvement"] == pytest.approx(20.0)
    assert "random (control of condtsf)" in set(df["variant"])
    assert tables.control_tables(runs_frame([r for r in records if "control_of" not in r and "targets" not in r])) == []
    # a random run at a seed the method did not run is not in its random reference
    pair = control_pairs(runs_frame(records + [record("random", 0.90, seed=1)])).iloc[0]
    assert pair["random_error"] == 0.50 and pair["n_random"] == 1
    # nor is a method run at a seed its control did not run
    pair = control_pairs(runs_frame(records + [record("condtsf", 0.10, seed=1, label_source="expert-relabelled")])).iloc[0]
    assert pair["method_error"] == 0.40 and pair["n_method"] == 1


def test_seed_table_separates_condensation_and_evaluation_spread():
    values = {(0, 0): 0.40, (0, 1): 0.42, (1, 0): 0.46, (1, 1): 0.50}
    records = [record("full", 0.3, ratio=None)] + [record("kcenter", v, seed=s, eval_seed=e)
                                                   for (s, e), v in values.items()]
    df = runs_frame(records)
    spread = seed_spread(df).iloc[0]
    assert spread["condense_std"] == pytest.approx(0.07 / math.sqrt(2))
    assert spread["eval_std"] == pytest.approx((0.02 / math.sqrt(2) + 0.04 / math.sqrt(2)) / 2)
    assert (spread["n_condense"], spread["n_eval"]) == (2, 2)
    text = to_markdown(tables.seed_tables(df)[0])
    assert "2 × 2" in text and "Std, condensation seeds" in text
    assert tables.seed_tables(runs_frame([record("kcenter", 0.4, seed=s) for s in (0, 1)])) == []


def test_lr_search_is_stated_and_the_chosen_rate_shown_per_cell():
    search = {"grid": [0.001, 0.01], "val": {"0.001": 0.5, "0.01": 0.4}}
    records = [record("full", 0.3, ratio=None, lr_search=dict(search, chosen=0.001)),
               record("random", 0.5, lr_search=dict(search, chosen=0.01)),
               record("kcenter", 0.4, lr_search=dict(search, chosen=0.001))]
    df = runs_frame(records)
    table = tables.scores_tables(df)[0]
    assert "Evaluation LR searched on validation for 3 of 3 runs (grid 0.001, 0.01); chosen rate per cell in the " \
           "LR column." in table.caption
    rows = {line.split("|")[1].strip(): line for line in to_markdown(table).splitlines() if line.startswith("| ")}
    assert rows["Random"].rstrip(" |").endswith("0.01") and rows["K-Center"].rstrip(" |").endswith("0.001")
    assert "Evaluation LR searched" in tables.main_tables(df)[0].caption
    assert protocol_violations(df) == []                          # searched over one grid: same protocol
    fixed = [records[0], records[1], dict(records[2], lr_search=None)]
    violations = protocol_violations(runs_frame(fixed))
    assert len(violations) == 1 and violations[0].startswith("d1, kcenter, 1%, mtgnn, seed 0: lr=0.001 where")


def _audit_store() -> list[dict]:
    return [record("full", 0.3, ratio=None), record("random", 0.5), record("kcenter", 0.4),
            record("dc", 0.42, train={"batch_size": 6}),           # its whole set per batch: prescribed
            record("mtt", 0.41, train={"batch_size": 6, "lr": 0.0123, "optimizer": "sgd", "momentum": 0.0},
                   condense_info={"syn_lr": 0.0123})]              # MTT's learned rate: prescribed


def test_the_audit_passes_a_clean_store_and_notes_prescribed_settings():
    df = runs_frame(_audit_store())
    assert protocol_violations(df) == []
    checks = audit(df)
    assert all(c.passed == 5 and c.unrecorded_runs == 0 for c in checks)
    text = audit_markdown(df)
    assert "No violation found in what was recorded." in text
    assert "batch_size: its whole set per batch (dc, mtt)" in text and "lr: its learned rate" in text


def test_the_audit_names_every_doctored_record():
    store = _audit_store() + [
        record("herding", 0.45, train={"select_metric": "test_rel_rmse"}),
        record("dm", 0.44, protocol=dict(PROTOCOL, test_batches_dropped=2)),
        record("kcenter", 0.43, seed=1, train={"epochs": 3}),
        record("kcenter", 0.44, seed=2, protocol=dict(PROTOCOL, test_windows=64)),
        record("kcenter", 0.44, seed=3, protocol=dict(PROTOCOL, select_split="test", scaler_fit="all")),
    ]
    violations = protocol_violations(runs_frame(store))
    expected = [
        "d1, herding, 1%, mtgnn, seed 0: checkpoint selected on the test split "
        "(train_config.select_metric=test_rel_rmse)",
        "d1, kcenter, 1%, mtgnn, seed 3: selected on the test split (protocol.select_split=test)",
        "d1, kcenter, 1%, mtgnn, seed 3: scaler not fit on the training steps alone (protocol.scaler_fit=all)",
        "d1, dm, 1%, mtgnn, seed 0: 2 test batch(es) dropped (protocol.test_batches_dropped)",
        "d1, kcenter, 1%, mtgnn, seed 2: evaluated 64 of the 100 test windows",
        "d1, herding, 1%, mtgnn, seed 0: select_metric=test_rel_rmse where the runs compared with it (d1, mtgnn) have "
        "select_metric=rel_rmse",
        "d1, kcenter, 1%, mtgnn, seed 1: epochs=3 where the runs compared with it (d1, mtgnn) have epochs=2",
    ]
    assert sorted(violations) == sorted(expected)


def test_the_audit_lists_unrecorded_fields_instead_of_passing_them(tmp_path):
    bare = [{k: v for k, v in r.items() if k not in ("protocol", "mask_zeros")} for r in _audit_store()]
    bare[1]["train_config"] = {"epochs": 2}
    df = runs_frame(bare)
    checks = {c.name: c for c in audit(df)}
    assert checks["scaler"].passed == 0 and checks["scaler"].unrecorded_runs == 5
    assert checks["selection"].not_recorded["protocol.select_split"] == 5
    assert checks["evaluation settings"].not_recorded["train_config.lr"] == 1
    assert protocol_violations(df) == []
    write_report(_store(tmp_path, bare), tmp_path / "out", ["main"], [], say=lambda line: None)
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.index("## Protocol audit") < report.index("**Main comparison")
    assert "| Scaler fit on training steps only (protocol.scaler_fit) | 0 | 5 (protocol.scaler_fit: 5) | 0 |" in report
    assert (tmp_path / "out" / "protocol_audit.md").read_text().startswith("## Protocol audit")


def test_report_writes_the_new_tables(tmp_path):
    records = scored_store() + [record("random", 0.45, control_of="kcenter"),
                                record("kcenter", 0.41, eval_seed=1), record("kcenter", 0.49, seed=1, eval_seed=0)]
    lines = []
    write_report(_store(tmp_path, records), tmp_path / "out", ["scores", "cost", "seeds", "control"], [], say=lines.append)
    names = {p.name for p in (tmp_path / "out" / "tables").iterdir()}
    assert {"scores_1pct.md", "cost.md", "seeds.md", "control.md"} <= names
    assert Path(tmp_path / "out" / "tables" / "scores_1pct.csv").read_text().splitlines()[0].endswith(",text,row_mark")


def test_records_as_the_runner_writes_them_with_evaluation_seeds_controls_and_lr_search():
    """Full data has seed = eval seed (it condenses nothing), the control is ``relabelled-random`` (family
    ``control``), a hard-target control is random's set again, and facts the runner could not establish
    (None) are not recorded rather than violations."""
    search = {"grid": [0.01, 0.001], "val": {"0.01": 0.5, "0.001": 0.4}, "chosen": 0.001, "default_lr": 0.0123}
    records = [
        record("full", 0.30, seed=7, ratio=None, eval_seed=7, targets="as-condensed"),
        record("random", 0.50, seed=0, eval_seed=7, targets="as-condensed"),
        record("condtsf", 0.40, seed=0, eval_seed=7, label_source="expert-relabelled", targets="as-condensed"),
        record("relabelled-random", 0.45, seed=0, eval_seed=7, control_of="condtsf", targets="as-condensed",
               label_source="expert-relabelled"),
        record("relabelled-random", 0.52, seed=0, eval_seed=7, control_of="condtsf", targets="hard",
               label_source="real"),
        record("mtt", 0.42, seed=0, eval_seed=7, targets="as-condensed", lr_search=search,
               train={"lr": 0.001, "optimizer": "sgd", "momentum": 0.0, "batch_size": 6},
               condense_info={"syn_lr": 0.0123}, protocol=dict(PROTOCOL, select_split=None)),
    ]
    for r in records:
        if r["method"] != "mtt":
            r["lr_search"] = dict(search, chosen=0.01, default_lr=0.001)
    df = runs_frame(records)
    pairs = paired_scores(df).set_index("variant")
    assert pairs.loc["condtsf", "full"] == 0.30 and pairs.loc["condtsf", "gap_closed"] == pytest.approx(0.5)
    pair = control_pairs(df).iloc[0]
    assert pair["control_error"] == 0.45 and pair["n_control"] == 1     # not the hard-target control's 0.52
    assert math.isnan(pair["hard_error"])                                 # CondTSF has no hard-target run
    assert protocol_violations(df) == []
    checks = {c.name: c for c in audit(df)}
    assert checks["selection"].not_recorded["protocol.select_split"] == 1
    assert "optimizer: the plain SGD it hints (its rate searched) (mtt)" in audit_markdown(df)
    table = tables.scores_tables(df)[0]
    text = to_markdown(table)
    assert "*Relabelling controls*" in text
    control = next(line for line in text.splitlines() if line.startswith("| Relabelled Random (control of condtsf)<"))
    assert "**" not in control and "<u>" not in control                    # shown, never ranked
