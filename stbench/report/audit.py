"""Protocol audit: what the records say about how every finished run was evaluated.

Four checks, each over the finished runs, from their records alone:

- **selection**: no checkpoint was selected on the test split: ``train_config.select_metric`` names a
  validation metric (or ``select`` is ``last``: no selection) and ``protocol.select_split`` is ``val``;
- **scaler**: the normalisation was fit on training steps only (``protocol.scaler_fit == "train"``);
- **test windows**: no test batch was dropped (``protocol.test_batches_dropped == 0``) and the number of
  evaluated test windows (``protocol.test_windows``) equals ``split_windows.test``;
- **evaluation settings**: every run compared with others (one dataset and evaluation model group: the
  runs of a table column) was trained and evaluated with the same settings (``EVAL_FIELDS`` of
  ``train_config``, and ``mask_zeros``). Settings a method prescribes are noted, not flagged: a batch of
  its whole set (``batch_size`` = the reduced set's windows) and MTT's learned rate (``lr`` =
  ``condense_info.syn_lr``, with its plain SGD). A searched learning rate (``lr_search``) compares as
  "searched over the grid", so runs searched over one grid agree and a searched run disagrees with a
  fixed one.

A run passes a check only when every field the check needs is recorded; otherwise it is counted as
"not recorded" with the missing fields named, never as passed. ``protocol_violations`` gives the
violations as strings ("dataset, method, budget, model, seed: what"); ``audit_markdown`` the report
section.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from stbench.report.frame import METRICS
from stbench.train import NEW_TRAIN_FIELDS

EVAL_FIELDS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "lr_schedule", "lr_min",
               "loss", "grad_clip", "eval_every", "eval_batch_size", "eval_memory_mb", "select", "select_metric", "amp")
RECORD_FIELDS = ("mask_zeros",)          # record-level evaluation settings, compared like EVAL_FIELDS
MISSING = object()


@dataclass
class Check:
    name: str
    what: str
    passed: int = 0
    not_recorded: Counter = field(default_factory=Counter)     # field -> runs that lack it
    unrecorded_runs: int = 0
    violations: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def where(run) -> str:
    """The run as the audit names it: dataset, method (variant), budget, model, seed (and evaluation seed)."""
    seed = f"seed {run['seed']}"
    if run.get("eval_seed_recorded") and run.get("eval_seed") != run.get("seed"):
        seed += f", eval seed {run['eval_seed']}"
    return f"{run['dataset_label']}, {run['variant']}, {run['budget_label']}, {run['model']}, {seed}"


def _loads(text) -> dict:
    return json.loads(text) if isinstance(text, str) and text else {}


def _protocol(run) -> dict:
    """The run's ``protocol`` facts; a fact the runner could not establish (None) counts as not recorded."""
    return {k: v for k, v in _loads(run.get("protocol")).items() if v is not None}


def settings(run) -> dict:
    """The run's evaluation settings as compared (a field not recorded is ``MISSING``)."""
    train = _loads(run.get("train_config"))
    out = {k: train.get(k, NEW_TRAIN_FIELDS.get(k, MISSING)) for k in EVAL_FIELDS}
    search = _loads(run.get("lr_search"))
    if search:
        out["lr"] = f"searched over {sorted(search.get('grid') or [])}"
    for k in RECORD_FIELDS:
        value = run.get(k)
        out[k] = MISSING if value is None or (isinstance(value, float) and math.isnan(value)) else value
    return out


def prescribed(run) -> dict:
    """Settings the method prescribed for this run (field -> why), which are not compared."""
    train = _loads(run.get("train_config"))
    out = {}
    windows = run.get("reduced_windows")
    if windows is not None and not (isinstance(windows, float) and math.isnan(windows)) \
            and train.get("batch_size") == windows and run.get("budget_kind") != "full":
        out["batch_size"] = "its whole set per batch"
    search = _loads(run.get("lr_search"))
    lr = search.get("default_lr") if search else train.get("lr")   # a searched grid replaced the hinted rate
    syn_lr = run.get("syn_lr")
    if isinstance(lr, (int, float)) and isinstance(syn_lr, float) and math.isfinite(syn_lr) \
            and math.isclose(lr, syn_lr, rel_tol=1e-9):
        for k in ("optimizer", "momentum") if search else ("lr", "optimizer", "momentum"):
            out[k] = "its learned rate (with plain SGD)" if not search else "the plain SGD it hints (its rate searched)"
    return out


def differences(a, b) -> list[str]:
    """Evaluation settings recorded in both runs that differ, other than those either method prescribed."""
    sa, sb = settings(a), settings(b)
    skip = set(prescribed(a)) | set(prescribed(b))
    return [f"{k} {_show(sa[k])} vs {_show(sb[k])}" for k in sa
            if k not in skip and sa[k] is not MISSING and sb[k] is not MISSING and sa[k] != sb[k]]


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _selection(run, check: Check) -> None:
    train = _loads(run.get("train_config"))
    protocol = _protocol(run)
    select, metric = train.get("select", MISSING), train.get("select_metric", MISSING)
    bad, missing = [], []
    split = protocol.get("select_split", MISSING)
    if split is MISSING:
        missing.append("protocol.select_split")
    elif split != "val":
        bad.append(f"selected on the {split} split (protocol.select_split={split})")
    if select != "last":
        if metric is MISSING:
            missing.append("train_config.select_metric")
        elif not _validation_metric(metric):
            what = "on the test split" if "test" in str(metric).lower() else "not on a validation metric"
            bad.append(f"checkpoint selected {what} (train_config.select_metric={metric})")
    _tally(run, check, bad, missing)


def _validation_metric(metric) -> bool:
    name = str(metric)
    for prefix in ("val_", "val/", "val:", "val."):
        name = name.removeprefix(prefix)
    return name in METRICS and "test" not in str(metric).lower()


def _scaler(run, check: Check) -> None:
    fit = _protocol(run).get("scaler_fit", MISSING)
    if fit is MISSING:
        _tally(run, check, [], ["protocol.scaler_fit"])
    else:
        bad = [] if fit == "train" else [f"scaler not fit on the training steps alone (protocol.scaler_fit={fit})"]
        _tally(run, check, bad, [])


def _test_windows(run, check: Check) -> None:
    protocol = _protocol(run)
    bad, missing = [], []
    dropped = protocol.get("test_batches_dropped", MISSING)
    if dropped is MISSING:
        missing.append("protocol.test_batches_dropped")
    elif dropped != 0:
        bad.append(f"{dropped} test batch(es) dropped (protocol.test_batches_dropped)")
    evaluated, split = protocol.get("test_windows", MISSING), run.get("test_windows")
    if evaluated is MISSING or split is None or (isinstance(split, float) and math.isnan(split)):
        missing.append("protocol.test_windows" if evaluated is MISSING else "split_windows.test")
    elif int(evaluated) != int(split):
        bad.append(f"evaluated {evaluated} of the {int(split)} test windows")
    _tally(run, check, bad, missing)


def _tally(run, check: Check, bad: list[str], missing: list[str]) -> None:
    if bad:
        check.violations += [f"{where(run)}: {b}" for b in bad]
    elif missing:
        check.unrecorded_runs += 1
    else:
        check.passed += 1
    check.not_recorded.update(missing)


def _settings_check(runs: pd.DataFrame, check: Check) -> None:
    """Each run against the most common value of each setting among the runs compared with it."""
    records = runs.to_dict("records")
    flagged: dict[int, list[str]] = {}
    missing: dict[int, list[str]] = {}
    notes: dict[str, list[str]] = {}
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(records):
        groups.setdefault((run["dataset_label"], run["model_group"]), []).append(i)
    for (dataset, group), members in sorted(groups.items()):
        values = {i: settings(records[i]) for i in members}
        exempt = {i: prescribed(records[i]) for i in members}
        for k in EVAL_FIELDS + RECORD_FIELDS:
            counted = Counter(json.dumps(values[i][k], sort_keys=True, default=str) for i in members
                              if values[i][k] is not MISSING and k not in exempt[i])
            for i in members:
                if values[i][k] is MISSING:
                    missing.setdefault(i, []).append(k)
            if not counted:
                continue
            reference = min(counted, key=lambda v: (-counted[v], v))
            for i in members:
                if values[i][k] is MISSING:
                    continue
                value = json.dumps(values[i][k], sort_keys=True, default=str)
                if k in exempt[i]:
                    if value != reference:
                        notes.setdefault(f"{k}: {exempt[i][k]}", []).append(records[i]["variant"])
                elif value != reference:
                    flagged.setdefault(i, []).append(
                        f"{k}={_show(values[i][k])} where the runs compared with it ({dataset}, {group}) have "
                        f"{k}={_show(json.loads(reference))}")
    for i, run in enumerate(records):
        _tally(run, check, flagged.get(i, []), [f"train_config.{k}" if k in EVAL_FIELDS else k
                                                for k in missing.get(i, [])])
    check.notes = [f"{what} ({', '.join(sorted(set(variants)))})" for what, variants in sorted(notes.items())]


CHECKS = (
    ("selection", "Checkpoint selected on validation, never on test (train_config.select_metric, "
                  "protocol.select_split)", _selection),
    ("scaler", "Scaler fit on training steps only (protocol.scaler_fit)", _scaler),
    ("test windows", "No test batch dropped, every test window evaluated (protocol.test_batches_dropped, "
                     "protocol.test_windows vs split_windows.test)", _test_windows),
)


def audit(df: pd.DataFrame) -> list[Check]:
    """The four checks over the finished runs of the frame."""
    ok = df[df["status"] == "ok"]
    checks = []
    for name, what, fn in CHECKS:
        check = Check(name, what)
        for run in ok.to_dict("records"):
            fn(run, check)
        checks.append(check)
    check = Check("evaluation settings", "Same evaluation settings in every compared run (train_config "
                  f"{', '.join(EVAL_FIELDS)}; mask_zeros), per dataset and evaluation model group")
    _settings_check(ok, check)
    checks.append(check)
    return checks


def protocol_violations(df: pd.DataFrame) -> list[str]:
    """Every violation of every check, as "dataset, method, budget, model, seed: what"."""
    return [v for check in audit(df) for v in check.violations]


def audit_markdown(df: pd.DataFrame) -> str:
    checks = audit(df)
    n = int((df["status"] == "ok").sum())
    lines = ["## Protocol audit", "",
             f"From the records of the {n} finished runs. A run passes a check only where every field the check "
             "needs is recorded; otherwise it counts as not recorded, with the missing fields named.", "",
             "| Check | Passed | Not recorded | Violations |", "|:--|--:|:--|--:|"]
    for check in checks:
        missing = "0"
        if check.unrecorded_runs:
            fields = ", ".join(f"{k}: {c}" for k, c in sorted(check.not_recorded.items()))
            missing = f"{check.unrecorded_runs} ({fields})"
        lines.append(f"| {check.what} | {check.passed} | {missing} | {len(check.violations)} |")
    violations = [(c.name, v) for c in checks for v in c.violations]
    lines.append("")
    if violations:
        lines.append("Violations:")
        lines += [f"- {name}: {v}" for name, v in violations]
    else:
        lines.append("No violation found in what was recorded.")
    notes = [note for c in checks for note in c.notes]
    if notes:
        lines += ["", "Settings a method prescribes (not compared): " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"
