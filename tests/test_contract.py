"""The contract every registered method keeps, checked through the real runner (scikit-learn style).

Each method runs on a tiny built-in dataset, twice, into two results folders, and must:
(a) meet its budget exactly: a static method keeps the sizes ``budget.sizes`` gives, a pruner visits
    the share of the data its retention asks for over the epochs it prunes (annealing pruners, which
    report ``pruned_epochs``, then visit everything in their last epochs), ``full`` visits everything;
(b) be deterministic for a seed: both runs give identical test metrics;
(c) record its set-up cost: the ``condense`` phase (a static method's condensation, a pruner's start);
(d) finish with status ``ok`` and finite test metrics.

Only the methods' declared properties (kind, ``is_bidimensional``, what they report) steer the checks.
Iteration counts are shrunk through ordinary ``--set`` parameters, given to every method that has them.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from stbench import measure
from stbench.budgets import Compression, Retention
from stbench.plugins import load_builtin
from stbench.protocols import LABEL_SOURCES, CondensedSet, Condenser, Pruner
from stbench.registry import METHODS, Entry
from stbench.runner import Grid, Runner, make_method

load_builtin()

DATASET = "synthetic-traffic"
SIZE = {"locations": 8, "steps": 300}
BUDGET = Compression(0.05)
RETENTION = Retention(0.7)
EPOCHS = {"static": 2, "dynamic": 8, "full": 2}   # pruners need enough epochs to prune and anneal
SHRINK = {   # any method with one of these parameters gets it (smaller loops, same code paths)
    "iterations": 1, "syn_steps": 2, "expert_train_epochs": 2, "expert_epochs": 1, "max_start_epoch": 1,
    "kmeans_iterations": 10, "reselect_every": 1, "batch_size": 16,
}
EXPECTED_FAILURES: dict[str, str] = {}   # method -> reason (strict xfail); none today


def _params(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(METHODS.get(name).Params)}
    return {f"{name}.{key}": value for key, value in SHRINK.items() if key in fields}


def _run(name: str, results: str) -> dict:
    kind = METHODS.get(name).kind
    grid = Grid(methods=name, dataset=DATASET, dataset_options=SIZE, budgets=[BUDGET], retentions=[RETENTION],
                seeds=[0], model="auto", preset="smoke", device="cpu", results=results, params=_params(name),
                train_overrides={"epochs": EPOCHS[kind]})
    records = Runner(grid).run()
    assert len(records) == 1
    return records[0]


def _cases():
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[name]))
            if name in EXPECTED_FAILURES else name for name in METHODS.names()]


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread for these tiny models: intra-op threads gain nothing at this size, and on a
    busy machine OpenMP's barriers made the file several times slower (the runner sets the count)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(measure, "usable_cpus", lambda: 1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", _cases())
def test_method_keeps_the_contract(name, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))   # expert trajectories (MTT, DATM)
    check_contract(name, tmp_path)


def check_contract(name: str, tmp_path) -> None:
    first = _run(name, str(tmp_path / "first"))
    second = _run(name, str(tmp_path / "second"))   # a fresh store: nothing reused but the expert cache

    # (d) finished, finite
    for record in (first, second):
        assert record["status"] == "ok", (record.get("error"), record.get("traceback"))
    test = first["metrics"]["test"]
    assert all(math.isfinite(test[k]) for k in ("mae", "rmse", "rel_mae", "rel_rmse")), test

    # (b) deterministic for the seed
    assert second["metrics"]["test"] == test, "not deterministic: another run with the same seed differs"
    assert second["reduced_shape"] == first["reduced_shape"]

    # (c) set-up cost recorded
    assert first["time_s"]["condense"] > 0 and second["time_s"]["condense"] > 0

    # (a) the budget, exactly
    method = make_method(name, _params(name))
    assert first["label_source"] == method.label_source()
    n_train, n_loc = first["split_windows"]["train"], first["dataset_shape"][1]
    epochs, visits = first["epochs"], first["visits_per_epoch"]
    assert epochs == EPOCHS[method.kind] and len(visits) == epochs
    if method.kind == "static":
        m, n = BUDGET.sizes(n_train, n_loc, method.is_bidimensional(BUDGET))
        assert first["budget_achieved"] == (m * n) / (n_train * n_loc), f"budget missed: {first['reduced_shape']}"
        assert first["reduced_shape"][0] == m and first["reduced_shape"][2] == n
        assert first["model"] == ("mtgnn-le" if method.is_bidimensional(BUDGET) else "mtgnn")
    elif method.kind == "full":
        assert visits == [n_train] * epochs and first["budget_achieved"] == 1.0
    else:
        ratio = RETENTION.ratio
        assert first["retention_nominal"] == ratio
        assert first["budget_achieved"] == pytest.approx(sum(visits) / (epochs * n_train))
        pruned = first.get("pruned_epochs", epochs)          # annealing pruners report how many they prune
        assert 1 <= pruned <= epochs and first.get("annealed_epochs", 0) == epochs - pruned
        assert visits[pruned:] == [n_train] * (epochs - pruned)   # annealed epochs: every sample
        achieved = sum(visits[:pruned]) / (pruned * n_train)
        assert first["retention_pruned_epochs"] == pytest.approx(achieved)
        assert first["retention_basis"] == RETENTION.basis and first["retention_total"] == first["budget_achieved"]
        target = RETENTION.pruned_epoch_ratio(epochs, pruned)   # total basis: r over all epochs
        assert abs(achieved - target) <= 0.5 / n_train + 1e-12, \
            f"retention missed: {achieved} for {target} ({first.get('retention_note')})"
        assert abs(first["budget_achieved"] - ratio) <= 0.5 / n_train + 1e-12, "retention missed over all epochs"


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_where_its_targets_come_from(name):
    method = make_method(name, {})
    assert method.label_source() in LABEL_SOURCES, f"{name} declares label source {method.label_source()!r}"
    if method.kind != "static":
        assert method.label_source() == "real"      # pruners and full data train on the real windows


# --- the contract tells right from wrong ----------------------------------------------------------

class OneWindowTooMany(Condenser):
    def condense(self, train, budget, ctx) -> CondensedSet:
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        return CondensedSet(indices=np.sort(ctx.rng.choice(len(train), size=m + 1, replace=False)))


class UnseededChoice(Condenser):
    def condense(self, train, budget, ctx) -> CondensedSet:
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        rng = np.random.default_rng()   # not ctx.rng: a different set every run
        return CondensedSet(indices=np.sort(rng.choice(len(train), size=m, replace=False)))


class FloorRetention(Pruner):
    def epoch(self, epoch, num_epochs):   # keeps fewer samples than round(r * n)
        keep = int(self.budget.ratio * self.num_samples) - 1
        return np.sort(self.ctx.rng.choice(self.num_samples, size=keep, replace=False)), None


@pytest.mark.parametrize("broken, reason", [(OneWindowTooMany, "budget missed"), (UnseededChoice, "not deterministic"),
                                             (FloorRetention, "retention missed")])
def test_the_contract_fails_a_method_that_breaks_it(broken, reason, tmp_path, monkeypatch, one_thread):
    name = f"test-{broken.__name__.lower()}"
    monkeypatch.setitem(METHODS._entries, name, Entry(name, broken, "test"))
    with pytest.raises(AssertionError, match=reason):
        check_contract(name, tmp_path)


def test_label_sources_of_the_distillers_follow_their_targets():
    expected = {"random": "real", "herding": "real", "kcenter": "real", "craig": "real", "stemdist-kcenter": "real",
                "dc": "learned", "mtt": "learned", "datm": "learned", "frepo": "learned", "stemdist": "learned",
                "stemdist-mtt": "learned", "dm": "teacher", "idm": "teacher"}
    for name, source in expected.items():
        assert make_method(name, {}).label_source() == source, name
    assert make_method("dm", {"label_mode": "learned"}).label_source() == "learned"
