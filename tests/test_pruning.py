"""Dynamic pruners: ST-Prune (eq. 3-6, annealing, ablations), InfoBatch, epsilon-greedy, UCB, Hard Random.

Most tests drive a pruner through ``start`` / ``epoch`` / ``update`` with synthetic losses and error
matrices (no model), as the trainer would; the last ones run every pruner end to end through the CLI.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.stprune import STPrune, complexity_score, pruned_epoch_count, temporal_variance
from stbench.budgets import Retention
from stbench.cli import main
from stbench.data.catalog import load_dataset
from stbench.data.windows import Series, WindowSpec
from stbench.measure import Meter
from stbench.plugins import load_builtin
from stbench.protocols import RunContext
from stbench.registry import METHODS, MODELS
from stbench.results import ResultStore
from stbench.sources import RealSource
from stbench.train import TrainConfig, error_matrix, train_step

PRUNERS = ["stprune", "stprune-wo-stc", "stprune-wo-res", "stprune-wo-anne", "infobatch", "epsilon-greedy", "ucb",
           "hard-random", "soft-random"]


@pytest.fixture(scope="module")
def series():
    load_builtin()
    return Series(load_dataset("synthetic-traffic", None, locations=4, steps=1000), WindowSpec(), "cpu")


def make_ctx(series, seed: int) -> RunContext:
    return RunContext(seed=seed, device=series.device, rng=np.random.default_rng(seed),
                      torch_generator=torch.Generator().manual_seed(seed), meter=Meter(series.device),
                      preset="smoke", series=series, model_factory=lambda n, name=None: None)


def started(name: str, series, ratio: float, seed: int = 0, basis: str = "pruned", **params):
    """A pruner started on the training windows; the pruned basis (the papers' protocol) unless told."""
    pruner = METHODS.get(name).make(params)
    pruner.start(len(series.split("train")), Retention(ratio, basis), make_ctx(series, seed))
    return pruner


def simulate(pruner, epochs: int, batch_size: int = 128):
    """Drive a started pruner as the trainer does, with skewed synthetic losses that shrink over epochs.

    Returns the (ids, weights) of every epoch. The noise has its own fixed generator, so two runs of
    the same pruner and seed see the same losses.
    """
    n = pruner.num_samples
    noise = np.random.default_rng(1234)
    difficulty = noise.lognormal(0.0, 0.6, n)
    horizon, locations = 12, 4
    plan = []
    for e in range(epochs):
        ids, weights = pruner.epoch(e, epochs)
        plan.append((np.asarray(ids).copy(), None if weights is None else np.asarray(weights).copy()))
        order = pruner.ctx.rng.permutation(len(ids))
        for begin in range(0, len(ids), batch_size):
            batch = np.asarray(ids)[order[begin:begin + batch_size]]
            scale = difficulty[batch] * (0.5 + 0.5 / (1 + e))
            errors = np.abs(1 + 0.3 * noise.standard_normal((len(batch), horizon, locations)))
            errors = torch.as_tensor(errors * scale[:, None, None], dtype=torch.float32)
            losses = errors.mean(dim=(1, 2))
            if getattr(pruner, "wants_error_matrix", False):
                pruner.update(batch, losses, errors=errors)
            else:
                pruner.update(batch, losses)
    return plan


def pruned_retention(plan, n: int, pruned_epochs: int) -> float:
    return sum(len(ids) for ids, _ in plan[:pruned_epochs]) / (pruned_epochs * n)


# --- ST-Prune: eq. 3 score ------------------------------------------------------------------------

def test_score_equals_eq3_on_a_hand_built_error_matrix():
    e = torch.tensor([[[1.0, 2.0, 3.0, 6.0],
                       [0.0, 2.0, 2.0, 4.0],
                       [3.0, 1.0, 0.0, 8.0]]])   # (1 sample, T = 3 horizon steps, N = 4 locations)
    m = e[0].numpy().astype(np.float64)
    mean = m.mean()
    axis = m.std(axis=1).mean() + m.std(axis=0).mean()             # std over space per step, over time per location
    profile = m.mean(axis=0).std() + m.mean(axis=1).std()          # std of the mean profiles
    assert complexity_score(e, 0.5).item() == pytest.approx(mean + 0.5 * axis, rel=1e-6)
    assert complexity_score(e, 0.5, "profile").item() == pytest.approx(mean + 0.5 * profile, rel=1e-6)
    assert complexity_score(e, 0.0).item() == pytest.approx(mean, rel=1e-6)


def test_unobserved_entries_are_left_out_of_the_score():
    e = torch.rand(2, 5, 6)
    holed = e.clone()
    holed[:, :, 2] = float("nan")                        # location 2 never observed
    without = torch.cat([e[:, :, :2], e[:, :, 3:]], dim=2)
    torch.testing.assert_close(complexity_score(holed, 0.5), complexity_score(without, 0.5))
    assert complexity_score(torch.full((1, 3, 3), float("nan")), 0.5).item() == 0.0


def test_local_spike_outranks_uniform_error_of_the_same_mean(series):
    """Figure 2a: a sample with a local anomaly scores above one with the same mean, uniform error."""
    uniform = torch.ones(12, 10)
    spike = torch.full((12, 10), 0.5)
    spike[:, 3] += 5.0                                     # one hub fails at every step: mean is still 1
    errors = torch.stack([uniform, spike])
    assert errors.mean(dim=(1, 2)).tolist() == pytest.approx([1.0, 1.0])
    for spread in ("axis", "profile"):
        a, b = complexity_score(errors, 0.5, spread).tolist()
        assert b > a
    a, b = complexity_score(errors, 0.0).tolist()
    assert a == pytest.approx(b)

    pruner = started("stprune", series, 0.3)
    n = pruner.num_samples
    batch = torch.stack([uniform] * (n - 1) + [spike])    # the last sample carries the spike
    pruner.update(np.arange(n), batch.mean(dim=(1, 2)), errors=batch)
    assert np.flatnonzero(pruner.informative()).tolist() == [n - 1]
    plain = started("stprune-wo-stc", series, 0.3)
    plain.update(np.arange(n), batch.mean(dim=(1, 2)), errors=batch)
    assert plain.scores[n - 1] == pytest.approx(plain.scores[0])   # the mean alone cannot tell them apart


# --- ST-Prune: eq. 5 weights and delta_i ----------------------------------------------------------

def test_intensity_is_the_temporal_variance_of_the_normalised_targets(series):
    pruner = started("stprune", series, 0.5)
    train = series.split("train")
    for i in (0, 17, len(train) - 1):
        b = train.batch([i])
        y = series.scale_target(b.y)[0, :, :, 0].numpy().astype(np.float64)   # (T, N)
        observed = b.mask[0, :, :, 0].numpy()
        per_location = [y[observed[:, j], j].var() for j in range(y.shape[1]) if observed[:, j].sum() >= 2]
        assert pruner.intensity[i] == pytest.approx(np.mean(per_location), rel=1e-5)
    assert pruner.intensity_mean == pytest.approx(pruner.intensity.mean())


def test_temporal_variance_skips_masked_steps():
    y = torch.tensor([1.0, 3.0, 100.0, 5.0]).view(1, 4, 1, 1)
    mask = torch.tensor([True, True, False, True]).view(1, 4, 1, 1)
    assert temporal_variance(y, mask).item() == pytest.approx(np.var([1.0, 3.0, 5.0]))


def _scored(name: str, series, ratio: float, **params):
    """A started pruner whose scores make exactly the samples with an even id informative."""
    pruner = started(name, series, ratio, **params)
    pruner.scores[:] = np.where(np.arange(pruner.num_samples) % 2 == 0, 2.0, 1.0)
    return pruner


def _eq5(pruner, ids, keep_rate):
    p = pruner.params
    return (pruner.intensity_mean / (pruner.intensity[ids] + p.eps)) ** p.alpha / keep_rate


def test_weights_follow_eq5_on_the_kept_redundant_samples(series):
    pruner = _scored("stprune", series, 0.7)
    n = pruner.num_samples
    ids, w = pruner.epoch(0, 100)
    informative = ids % 2 == 0
    red_size, red_kept = n - math.ceil(n / 2), int((~informative).sum())
    assert informative.sum() == math.ceil(n / 2) and len(ids) == round(0.7 * n)
    assert np.all(w[informative] == 1.0)
    np.testing.assert_allclose(w[~informative], _eq5(pruner, ids[~informative], red_kept / red_size), rtol=1e-6)
    stationary = ids[~informative][np.argmin(pruner.intensity[ids[~informative]])]
    assert w[ids == stationary][0] == w[~informative].max()    # the most stationary kept sample weighs most


def test_weights_as_eq6_is_printed_go_on_the_informative_samples(series):
    pruner = _scored("stprune", series, 0.7, rescale="informative")
    ids, w = pruner.epoch(0, 100)
    informative = ids % 2 == 0
    np.testing.assert_allclose(w[informative], _eq5(pruner, ids[informative], 1.0), rtol=1e-6)
    assert np.all(w[~informative] == 1.0)


def test_without_rescaling_the_weights_are_the_uniform_inverse_keep_rate(series):
    pruner = _scored("stprune-wo-res", series, 0.7)
    n = pruner.num_samples
    ids, w = pruner.epoch(0, 100)
    kept_red = int((ids % 2 == 1).sum())
    np.testing.assert_allclose(w[ids % 2 == 1], (n - math.ceil(n / 2)) / kept_red, rtol=1e-6)


# --- ST-Prune at low retention: when eq. 5 applies, and the record of it ------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_at_low_retention_an_overflowing_informative_set_carries_no_eq5_weight(series, ratio):
    """Half the samples are informative, more than r <= 0.3 of them fit: overflow="top" keeps only
    informative samples at weight 1, so eq. 5 never applies and ST-Prune equals its w/o Res. ablation."""
    n = None
    plans = {}
    for name in ("stprune", "stprune-wo-res"):
        pruner = _scored(name, series, ratio)
        n = pruner.num_samples
        ids, w = pruner.epoch(0, 100)
        assert len(ids) == round(ratio * n) and np.all(ids % 2 == 0)
        np.testing.assert_array_equal(w, np.ones(len(ids)))         # no eq. 5 weight, not even 1/(1 - r)
        report = pruner.report()
        assert report["eq5_weighted_visits"] == 0 and report["eq5_weighted_share"] == 0.0
        assert report["eq5_weighted_epochs"] == 0
        plans[name] = (ids, w)
    np.testing.assert_array_equal(plans["stprune"][0], plans["stprune-wo-res"][0])
    np.testing.assert_array_equal(plans["stprune"][1], plans["stprune-wo-res"][1])

    # rescale="informative" (eq. 6 as printed) does weight the kept informative samples then
    pruner = _scored("stprune", series, ratio, rescale="informative")
    ids, w = pruner.epoch(0, 100)
    np.testing.assert_allclose(w, _eq5(pruner, ids, len(ids) / math.ceil(n / 2)), rtol=1e-6)
    assert pruner.report()["eq5_weighted_visits"] == len(ids) and pruner.report()["eq5_weighted_share"] == 1.0


@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_at_low_retention_a_small_informative_set_is_topped_up_with_eq5_weighted_samples(series, ratio):
    """One sample in 20 is informative: S_inf fits, the rest of the budget is redundant samples, each
    with its eq. 5 weight (stationarity-dependent), and the report counts exactly those visits."""
    pruner = started("stprune", series, ratio)
    n = pruner.num_samples
    pruner.scores[:] = np.where(np.arange(n) % 20 == 0, 10.0, 1.0)
    inf_size = len(range(0, n, 20))
    keep = round(ratio * n)
    assert inf_size < keep
    ids, w = pruner.epoch(0, 100)
    redundant = ids % 20 != 0
    assert len(ids) == keep and (~redundant).sum() == inf_size and np.all(w[~redundant] == 1.0)
    expected = _eq5(pruner, ids[redundant], (keep - inf_size) / (n - inf_size))
    np.testing.assert_allclose(w[redundant], expected, rtol=1e-6)
    assert np.ptp(w[redundant]) > 0                                     # stationarity matters, not only 1/(1 - r)
    report = pruner.report()
    assert report["eq5_weighted_visits"] == keep - inf_size and report["eq5_weighted_epochs"] == 1
    assert report["eq5_weighted_share"] == pytest.approx((keep - inf_size) / keep)

    ablation = started("stprune-wo-res", series, ratio)
    ablation.scores[:] = pruner.scores
    ids_ab, w_ab = ablation.epoch(0, 100)
    np.testing.assert_array_equal(ids_ab, ids)                          # same seed, same choice
    np.testing.assert_allclose(w_ab[redundant], (n - inf_size) / (keep - inf_size), rtol=1e-6)
    assert not np.allclose(w_ab, w)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.7])
def test_the_report_counts_the_eq5_weighted_visits_of_a_whole_run(series, ratio):
    pruner = started("stprune", series, ratio)
    plan = simulate(pruner, 30)
    pruned = pruned_epoch_count(0.9, 30)
    weighted = sum(int((w != 1.0).sum()) for _, w in plan[:pruned])
    visits = sum(len(ids) for ids, _ in plan[:pruned])
    report = pruner.report()
    assert report["eq5_weighted_visits"] == weighted
    assert report["eq5_weighted_share"] == pytest.approx(weighted / visits)
    assert report["eq5_weighted_epochs"] == sum(1 for _, w in plan[:pruned] if (w != 1.0).any())
    ablation = simulate(started("stprune-wo-res", series, ratio), 30)
    same = all(np.array_equal(a[0], b[0]) and (a[1] is None) == (b[1] is None)
               and (a[1] is None or np.array_equal(a[1], b[1])) for a, b in zip(plan, ablation))
    assert same == (weighted == 0)                  # the w/o Res. ablation differs exactly when eq. 5 applied
    if ratio == 0.1:                                # S_inf always overflows: the observed "equal to the last digit"
        assert weighted == 0 and same
    if ratio == 0.7:
        assert report["eq5_weighted_share"] > 0 and not same


@pytest.mark.parametrize("overflow", ["top", "sample"])
def test_informative_overflow_stays_in_budget_and_inside_the_informative_set(series, overflow):
    pruner = _scored("stprune", series, 0.1, overflow=overflow)
    pruner.scores[::2] += np.linspace(0, 1, len(pruner.scores[::2]))   # distinct informative scores
    ids, w = pruner.epoch(0, 100)
    assert len(ids) == round(0.1 * pruner.num_samples) and np.all(ids % 2 == 0) and np.all(w == 1.0)
    if overflow == "top":
        best = np.argsort(-pruner.scores)[:len(ids)]
        assert sorted(ids.tolist()) == sorted(best.tolist())


def test_unseen_samples_are_informative_and_visited_first(series):
    pruner = started("stprune", series, 0.3)
    n = pruner.num_samples
    assert pruner.informative().all()
    plan = simulate(pruner, 10)
    first_sweep = np.concatenate([ids for ids, _ in plan[:3]])
    assert len(np.unique(first_sweep)) == min(n, len(first_sweep))   # no repeat before everything is seen


# --- retention and annealing ----------------------------------------------------------------------

@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("name, params", [
    ("stprune", {}), ("stprune", {"overflow": "sample"}), ("stprune", {"rescale": "informative"}),
    ("stprune-wo-stc", {}), ("stprune-wo-res", {}), ("stprune-wo-anne", {}),
    ("epsilon-greedy", {}), ("ucb", {}), ("hard-random", {}),
])
def test_achieved_retention_over_the_pruned_epochs_matches_the_target(series, name, params, ratio):
    pruner = started(name, series, ratio, **params)
    plan = simulate(pruner, 100)
    pruned = 100 if name in ("stprune-wo-anne", "epsilon-greedy", "ucb", "hard-random") else 90
    assert pruned_retention(plan, pruner.num_samples, pruned) == pytest.approx(ratio, abs=0.01)
    if hasattr(pruner, "report"):
        assert pruner.report()["retention_pruned_epochs"] == pytest.approx(ratio, abs=0.01)
        assert pruner.report()["pruned_epochs"] == pruned


@pytest.mark.parametrize("name, pruned", [("stprune", 90), ("infobatch", 87), ("stprune-wo-anne", 100)])
def test_the_last_epochs_use_every_sample_with_unit_weights(series, name, pruned):
    pruner = started(name, series, 0.3)
    plan = simulate(pruner, 100)
    n = pruner.num_samples
    for ids, weights in plan[pruned:]:
        assert np.array_equal(ids, np.arange(n)) and weights is None
    assert len(plan[pruned - 1][0]) < n
    assert pruner.report()["annealed_epochs"] == 100 - pruned


def total_retention(plan, n: int) -> float:
    return sum(len(ids) for ids, _ in plan) / (len(plan) * n)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("name", PRUNERS)
def test_on_the_total_basis_every_pruner_visits_r_of_all_epochs(series, name, ratio):
    """Annealing pruners prune harder in their pruned epochs so that all epochs together make r x E x n
    visits, as Soft Random does; InfoBatch, which cannot drop its not-well-learned samples, records
    that it missed the target instead."""
    pruner = started(name, series, ratio, basis="total")
    plan = simulate(pruner, 100)
    reached = total_retention(plan, pruner.num_samples)
    if name == "infobatch" and reached > ratio + 0.01:
        assert "not reached" in pruner.report()["retention_note"]
    else:
        assert reached == pytest.approx(ratio, abs=0.01)


def test_total_basis_pruned_epochs_keep_the_share_that_pays_for_the_annealed_epochs(series):
    pruner = started("stprune", series, 0.3, basis="total")      # 90 pruned + 10 full epochs
    plan = simulate(pruner, 100)
    n = pruner.num_samples
    assert all(len(ids) == round((0.3 * 100 - 10) / 90 * n) for ids, _ in plan[:90])
    assert Retention(0.3).pruned_epoch_ratio(100, 90) == pytest.approx(20 / 90)
    assert Retention(0.3, "pruned").pruned_epoch_ratio(100, 90) == 0.3
    assert Retention(0.05).pruned_epoch_ratio(100, 90) == 0.0    # the annealed epochs alone exceed it


def test_stprune_records_a_total_target_its_annealed_epochs_exceed(series):
    pruner = started("stprune", series, 0.05, basis="total")
    plan = simulate(pruner, 100)
    assert all(len(ids) == 1 for ids, _ in plan[:90])             # the least it can keep
    assert "not reached" in pruner.report()["retention_note"]


# --- InfoBatch ------------------------------------------------------------------------------------

def test_infobatch_kept_low_loss_samples_carry_the_inverse_keep_ratio(series):
    pruner = started("infobatch", series, 0.5, prune_ratio=0.5)
    n = pruner.num_samples
    pruner.update(np.arange(n), torch.as_tensor(np.where(np.arange(n) < n // 4, 1.0, 3.0)))   # W = first quarter
    ids, w = pruner.epoch(0, 100)
    well = ids < n // 4
    assert well.sum() == n // 4 - round(0.5 * (n // 4))
    assert np.all(w[well] == pytest.approx(2.0)) and np.all(w[~well] == 1.0)
    assert np.array_equal(ids[~well], np.arange(n // 4, n))   # every other sample is kept


def test_infobatch_derives_its_prune_ratio_from_the_target(series):
    pruner = started("infobatch", series, 0.5)
    n = pruner.num_samples
    pruner.update(np.arange(n), torch.as_tensor(np.where(np.arange(n) < 3 * n // 4, 1.0, 3.0)))
    ids, w = pruner.epoch(0, 100)
    assert len(ids) == round(0.5 * n)
    ratio = pruner.ratios[-1]
    assert ratio == pytest.approx((n - round(0.5 * n)) / (3 * n // 4))
    np.testing.assert_allclose(w[ids < 3 * n // 4], 1 / (1 - ratio), rtol=1e-6)


@pytest.mark.parametrize("ratio", [0.5, 0.7])
def test_infobatch_matches_reachable_targets_over_the_pruned_epochs(series, ratio):
    pruner = started("infobatch", series, ratio)
    plan = simulate(pruner, 100)
    assert len(plan[0][0]) == pruner.num_samples               # scores start high: the first epoch is full
    report = pruner.report()
    assert report["retention_pruned_epochs"] == pytest.approx(ratio, abs=0.01)
    assert pruned_retention(plan, pruner.num_samples, 87) == pytest.approx(report["retention_pruned_epochs"])
    assert "retention_note" not in report


def test_infobatch_records_an_unreachable_target(series):
    pruner = started("infobatch", series, 0.1)
    simulate(pruner, 100)
    report = pruner.report()
    assert report["retention_unreachable_epochs"] > 0
    assert report["retention_pruned_epochs"] > 0.11 and "not reached" in report["retention_note"]


# --- epsilon-greedy, UCB, Hard Random -------------------------------------------------------------

def test_epsilon_greedy_keeps_the_top_scores_and_explores_the_rest(series):
    pruner = started("epsilon-greedy", series, 0.2, epsilon=0.25)
    n = pruner.num_samples
    pruner.update(np.arange(n), torch.arange(n, dtype=torch.float64))    # score = id
    ids, w = pruner.epoch(0, 10)
    keep = round(0.2 * n)
    greedy = round(0.75 * keep)
    assert len(ids) == keep and w is None
    assert set(range(n - greedy, n)) <= set(ids.tolist())
    pruner.update(np.array([0]), torch.tensor([10.0 * n]))
    assert pruner.scores[0] == pytest.approx(0.9 * 0 + 0.1 * 10 * n)     # EMA with decay 0.9


def test_ucb_ranks_by_mean_plus_c_std(series):
    pruner = started("ucb", series, 0.01, c=2.0)
    n = pruner.num_samples
    flat = torch.full((n,), 1.0)
    pruner.update(np.arange(n), flat)
    pruner.update(np.arange(n), flat)
    pruner.update(np.array([5]), torch.tensor([3.0]))         # one sample's loss jumps: larger bound
    d = 3.0 - 1.0
    assert pruner.mean[5] == pytest.approx(1.0 + 0.1 * d)
    assert pruner.var[5] == pytest.approx(0.9 * 0.1 * d * d)
    assert pruner.bound()[5] == pytest.approx(pruner.mean[5] + 2.0 * math.sqrt(pruner.var[5]))
    ids, w = pruner.epoch(0, 10)
    assert 5 in ids.tolist() and w is None


def test_hard_random_keeps_one_subset_for_every_epoch(series):
    pruner = started("hard-random", series, 0.3)
    plan = simulate(pruner, 5)
    assert len(plan[0][0]) == round(0.3 * pruner.num_samples)
    assert all(np.array_equal(ids, plan[0][0]) for ids, _ in plan)


@pytest.mark.parametrize("name", PRUNERS)
def test_same_seed_same_choices(series, name):
    first = simulate(started(name, series, 0.3, seed=7), 12)
    again = simulate(started(name, series, 0.3, seed=7), 12)
    other = simulate(started(name, series, 0.3, seed=8), 12)
    same = all(np.array_equal(a[0], b[0]) and (a[1] is None) == (b[1] is None)
               and (a[1] is None or np.array_equal(a[1], b[1])) for a, b in zip(first, again))
    assert same
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


@pytest.mark.parametrize("params, message", [
    ({"rescale": "both"}, "rescale must be one of redundant, informative (got 'both')"),
    ({"overflow": "drop"}, "overflow must be one of top, sample (got 'drop')"),
    ({"delta": 0.0}, "delta must be in (0, 1] (got 0.0)"), ({"delta": 1.5}, "delta must be in (0, 1] (got 1.5)"),
    ({"eps": 0.0}, "eps must be > 0 (got 0.0)"), ({"lam": -1.0}, "lam must be >= 0 (got -1.0)"),
    ({"alpha": -0.5}, "alpha must be >= 0 (got -0.5)"), ({"alpha": float("nan")}, "alpha must be >= 0 (got nan)"),
])
def test_stprune_rejects_bad_parameters(params, message):
    with pytest.raises(ValueError) as err:       # the Params range-check protocol (the runner adds "method stprune: ")
        STPrune.make(params)
    assert str(err.value) == message


def test_stprune_bad_parameters_stop_the_cli_with_one_line(tmp_path, capsys):
    code = main(["run", "--methods", "stprune-wo-res", "--dataset", "synthetic-traffic", "--size",
                 "locations=4,steps=300", "--set", "stprune-wo-res.delta=0", "--quiet", "--results", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "stbench: error: method stprune-wo-res: delta must be in (0, 1] (got 0.0)"


# --- the trainer passes the error matrix ----------------------------------------------------------

def test_error_matrix_averages_observed_channels_and_marks_unobserved_entries():
    pred = torch.zeros(1, 2, 2, 2)
    y = torch.tensor([[[[1.0, 3.0], [2.0, -4.0]], [[5.0, 5.0], [1.0, 1.0]]]])
    mask = torch.tensor([[[[True, True], [True, False]], [[False, False], [True, True]]]])
    e = error_matrix(pred, y, mask)
    assert e.shape == (1, 2, 2)
    assert e[0, 0].tolist() == [2.0, 2.0] and math.isnan(e[0, 1, 0].item()) and e[0, 1, 1].item() == 1.0


@pytest.mark.parametrize("subsets", [1, 2])
def test_train_step_returns_the_error_matrix_for_every_location(series, subsets):
    torch.manual_seed(0)
    train = series.split("train")
    source = RealSource(train)
    model = MODELS.get("mlp")(series.num_locations, series.num_channels, 1)
    cfg = TrainConfig(location_subsets=subsets)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    ids = np.arange(8)
    losses, errors = train_step(model, opt, source, ids, None, cfg, torch.Generator().manual_seed(0), errors=True)
    x, y, mask = source.batch(ids)
    with torch.no_grad():
        expected = error_matrix(model(x, None), y, mask)
    torch.testing.assert_close(errors, expected, equal_nan=True)
    assert torch.equal(losses, train_step(model, opt, source, ids, None, cfg, torch.Generator().manual_seed(0)))


# --- end to end -----------------------------------------------------------------------------------

def test_every_pruner_runs_through_the_cli_and_records_its_retention(tmp_path):
    results = str(tmp_path / "res")
    names = [n for n in PRUNERS if n != "soft-random"]
    assert main(["run", "--methods", ",".join(names), "--dataset", "synthetic-traffic",
                 "--size", "locations=12,steps=400", "--epochs", "10", "--model", "mlp", "--retention", "0.3",
                 "--retention-basis", "pruned", "--quiet", "--results", results]) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    assert sorted(records) == sorted(names)
    assert {r["retention_basis"] for r in records.values()} == {"pruned"}
    n = records["stprune"]["split_windows"]["train"]
    for name, r in records.items():
        assert r["status"] == "ok", (name, r.get("error"))
        assert r["retention_nominal"] == 0.3
        assert r["sample_visits"] == sum(r["visits_per_epoch"]) and r["optimizer_steps"] > 0
        assert r["budget_achieved"] == pytest.approx(r["sample_visits"] / (10 * n))
        assert len(r["schedule_time_s"]) == 10            # selection/scoring time, inside each epoch's time
        assert all(0 < s <= e for s, e in zip(r["schedule_time_s"], r["epoch_time_s"]))
    for name in ("hard-random", "epsilon-greedy", "ucb", "stprune-wo-anne"):
        assert records[name]["budget_achieved"] == pytest.approx(0.3, abs=0.01)
    for name in ("stprune", "stprune-wo-stc", "stprune-wo-res", "stprune-wo-anne"):
        r = records[name]                                  # how often eq. 5 applied reaches the record
        assert 0 <= r["eq5_weighted_visits"] <= r["pruned_epochs"] * n and 0 <= r["eq5_weighted_share"] <= 1
        assert r["eq5_weighted_share"] == pytest.approx(
            r["eq5_weighted_visits"] / (r["retention_pruned_epochs"] * r["pruned_epochs"] * n))
    for name in ("stprune", "stprune-wo-stc", "stprune-wo-res"):
        r = records[name]
        assert r["retention_pruned_epochs"] == pytest.approx(0.3, abs=0.01)
        assert r["pruned_epochs"] == 9 and r["budget_achieved"] == pytest.approx((9 * r["visits_per_epoch"][0] + n)
                                                                                   / (10 * n))
    infobatch = records["infobatch"]
    assert infobatch["pruned_epochs"] == 8
    assert (infobatch["retention_pruned_epochs"] == pytest.approx(0.3, abs=0.01)
            or "not reached" in infobatch["retention_note"])


def test_the_cli_matches_retention_on_total_visits_by_default(tmp_path):
    results = str(tmp_path / "res")
    names = ["stprune", "infobatch", "soft-random", "hard-random"]
    assert main(["run", "--methods", ",".join(names), "--dataset", "synthetic-traffic",
                 "--size", "locations=12,steps=400", "--epochs", "10", "--model", "mlp", "--retention", "0.5",
                 "--quiet", "--results", results]) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    for name, r in records.items():
        assert r["retention_basis"] == "total" and r["retention_nominal"] == 0.5
        assert r["retention_total"] == r["budget_achieved"]
        if name != "infobatch" or "retention_note" not in r:
            assert r["retention_total"] == pytest.approx(0.5, abs=0.01), name
    assert records["stprune"]["retention_pruned_epochs"] == pytest.approx((0.5 * 10 - 1) / 9, abs=0.01)


def test_muon_steps_matrices_with_muon_and_the_rest_with_adam():
    from stbench.train import MuonAdam
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = MuonAdam(model.parameters(), 1e-2, 0.0)
    muon, adam = opt.parts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adam, torch.optim.Adam)
    assert {p.ndim for g in muon.param_groups for p in g["params"]} == {2}
    assert {p.ndim for g in adam.param_groups for p in g["params"]} == {1}
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 4)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    scheduler.step()                                               # a scheduler reaches both parts
    assert muon.param_groups[0]["lr"] == adam.param_groups[0]["lr"] < 1e-2


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "muon"])
def test_the_optimizer_axis_runs_from_the_command_line(tmp_path, optimizer):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "stprune", "--dataset", "synthetic-traffic", "--size", "locations=6,steps=300",
                 "--epochs", "2", "--model", "mlp", "--optimizer", optimizer, "--quiet", "--results", results]) == 0
    (record,) = ResultStore(results).records()
    assert record["status"] == "ok" and record["train_config"]["optimizer"] == optimizer


@pytest.mark.parametrize("length", [24, 96])
def test_the_horizon_axis_derives_the_retention_from_the_window_count(tmp_path, length):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "hard-random", "--dataset", "synthetic-traffic",
                 "--size", "locations=6,steps=1000", "--epochs", "1", "--model", "mlp", "--retention", "0.3",
                 "--input-len", str(length), "--output-len", str(length), "--quiet", "--results", results]) == 0
    (record,) = ResultStore(results).records()
    n_train = record["split_windows"]["train"]
    assert n_train == 600 - 2 * length + 1                         # windows of the 60% training steps
    assert record["visits_per_epoch"] == [round(0.3 * n_train)]
    assert record["reduced_shape"][1] == length
