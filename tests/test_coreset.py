"""Coreset selectors: known answers on tiny inputs, determinism, and full runs through the harness."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_data

from baselines.coreset.craig import Similarity, facility_location, last_layer_gradients
from baselines.coreset.features import location_features, window_features
from baselines.coreset.herding import herding
from baselines.coreset.kcenter import kcenter_greedy
from stbench.budgets import Compression
from stbench.cli import main
from stbench.data.windows import Series, WindowSpec
from stbench.measure import Meter
from stbench.plugins import load_builtin
from stbench.protocols import RunContext
from stbench.registry import METHODS, MODELS
from stbench.results import ResultStore
from stbench.sources import RealSource
from stbench.train import per_sample_loss


@pytest.fixture(scope="module")
def series():
    load_builtin()
    return Series(tiny_data(), WindowSpec(), "cpu")


def make_ctx(series, seed: int, model: str = "mlp") -> RunContext:
    torch.manual_seed(seed)
    cls = MODELS.get(model)
    return RunContext(seed=seed, device=series.device, rng=np.random.default_rng(seed),
                      torch_generator=torch.Generator().manual_seed(seed), meter=Meter(series.device),
                      preset="smoke", series=series,
                      model_factory=lambda n, name=None: cls(n, series.num_channels, len(series.data.targets)))


# --- known answers -------------------------------------------------------------------------------

def test_kcenter_on_a_line_picks_the_extremes_after_the_middle():
    points = torch.arange(11.0).unsqueeze(1)
    picks = kcenter_greedy(points, 3, first=5).tolist()
    assert picks == [5, 0, 10]
    everything = kcenter_greedy(points, 11, first=5).tolist()
    assert sorted(everything) == list(range(11))


def test_kcenter_never_repeats_a_row_among_duplicates():
    points = torch.zeros(6, 2)
    assert sorted(kcenter_greedy(points, 6, first=2).tolist()) == list(range(6))


def brute_force_herding(features: torch.Tensor, k: int) -> list[int]:
    """Welling's greedy written out: step t takes the unchosen row that brings the mean of the chosen
    rows closest to the full mean (float64, one candidate at a time; ties to the lowest id)."""
    f = features.double()
    mu, chosen = f.mean(dim=0), []
    for _ in range(k):
        best, best_gap = None, None
        for i in range(len(f)):
            if i in chosen:
                continue
            gap = float((f[chosen + [i]].mean(dim=0) - mu).norm())
            if best_gap is None or gap < best_gap - 1e-12:
                best, best_gap = i, gap
        chosen.append(best)
    return chosen


def test_herding_balances_the_running_mean_instead_of_ranking_by_distance_to_it():
    # mean 0. Ranking by |f - mean| gives 0, 1, 2, 3, 4. Herding: 0.1 first; then -0.3 (running mean
    # -0.1) beats 0.2 (running mean 0.15); then 0.2 (mean 0); then 3.0 and -3.0 tie, the lowest id first.
    values = torch.tensor([[0.1], [0.2], [-0.3], [3.0], [-3.0]])
    by_distance = (values - values.mean()).abs().squeeze(1).argsort().tolist()
    assert by_distance == [0, 1, 2, 3, 4]
    assert herding(values, 5).tolist() == [0, 2, 1, 3, 4]
    assert herding(values, 2).tolist() == [0, 2]            # a different set, not only a different order


def test_herding_equals_a_brute_force_greedy_on_features_of_unequal_norms():
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(40, 5, generator=gen) * torch.rand(40, 1, generator=gen).mul(3).add(0.2)
    expected = brute_force_herding(features, 15)
    assert herding(features, 15).tolist() == expected
    mean = features.mean(dim=0)
    assert herding(features, 15).tolist() != (features - mean).norm(dim=1).argsort()[:15].tolist()


def test_herding_method_selects_the_greedy_answer_on_window_features(series):
    train = series.split("train")
    condensed = METHODS.get("herding").make({}).condense(train, Compression(0.05), make_ctx(series, 0))
    features = window_features(train, np.random.default_rng(0), 8.0)
    m = Compression(0.05).sizes(len(train), series.num_locations, bidimensional=False)[0]
    assert condensed.indices.tolist() == brute_force_herding(features, m)


def brute_force_facility_location(points: torch.Tensor, k: int) -> tuple[list[int], list[int]]:
    """CRAIG's greedy written out on Euclidean distances: each step takes the candidate that lowers
    L(S) = sum_i min(c, min_{j in S} d_ij) the most (c bounds every distance: an auxiliary element),
    then gamma_j = how many points have j as their nearest pick."""
    d = torch.cdist(points.double(), points.double())
    nearest_d, chosen = torch.full((len(points),), float(d.max()) + 1.0, dtype=torch.float64), []
    for _ in range(k):
        cost = torch.minimum(nearest_d[:, None], d).sum(dim=0)     # L(S + {j}) for every candidate j
        cost[chosen] = torch.inf
        chosen.append(int(cost.argmin()))                          # ties: the lowest id
        nearest_d = torch.minimum(nearest_d, d[:, chosen[-1]])
    nearest = d[:, chosen].argmin(dim=1)
    return chosen, torch.bincount(nearest, minlength=k).tolist()


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_craig_weights_are_the_sizes_of_the_clusters_its_picks_represent(similarity):
    """Clusters of 6, 3 and 1 points along three directions: one pick each, largest first, and each
    pick weighs as many points as its cluster holds (not k equal shares, not a constant)."""
    gen = torch.Generator().manual_seed(0)
    sizes = [6, 3, 1]
    centres = torch.eye(5)[:3] * torch.tensor([[2.0], [1.0], [3.0]])
    cluster = torch.tensor(sum(([c] * s for c, s in enumerate(sizes)), []))
    points = centres[cluster] + 0.02 * torch.randn(len(cluster), 5, generator=gen)
    order = torch.randperm(len(points), generator=gen)
    points, cluster = points[order], cluster[order]
    picks, counts = facility_location(points, 3, similarity)
    assert cluster[picks].tolist() == [0, 1, 2]             # greedy order: the largest gain first
    assert counts.tolist() == sizes


def test_craig_greedy_prefers_dense_regions_where_kcenter_takes_the_outlier():
    """Ten points near 0, five near 10, one at 30 (on a line). With k = 2, facility location picks the
    two dense groups (gain 5 x 10 beats 1 x 30); K-Center from a point near 0 takes the outlier. The
    outlier is nearest to the pick near 10, so the weights are 10 and 6."""
    gen = torch.Generator().manual_seed(0)
    points = torch.cat([torch.zeros(10, 1), torch.full((5, 1), 10.0), torch.full((1, 1), 30.0)])
    points = points + 0.01 * torch.randn(16, 1, generator=gen)
    picks, counts = facility_location(points, 2)
    assert [round(float(points[j]) / 10) for j in picks.tolist()] == [0, 1]
    assert counts.tolist() == [10, 6]
    assert kcenter_greedy(points, 2, first=int(picks[0])).tolist()[1] == 15
    medoid = int(torch.cdist(points, points).sum(dim=1).argmin())
    assert int(picks[0]) == medoid                            # the first pick is the 1-medoid


def test_craig_greedy_equals_a_brute_force_greedy_on_random_gradients():
    gen = torch.Generator().manual_seed(1)
    grads = torch.randn(60, 4, generator=gen, dtype=torch.float64) * torch.rand(60, 1, generator=gen,
                                                                                dtype=torch.float64).mul(2)
    picks, counts = facility_location(grads, 8)
    expected_picks, expected_counts = brute_force_facility_location(grads, 8)
    assert picks.tolist() == expected_picks and counts.tolist() == expected_counts


def test_lazy_greedy_equals_plain_greedy():
    grads = torch.randn(120, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sim = Similarity(grads, "euclidean")
    full, best, plain = sim(slice(None), slice(None)), torch.zeros(120, dtype=torch.float64), []
    for _ in range(12):
        gains = (full - best[:, None]).clamp_min(0).sum(dim=0)
        gains[plain] = -1
        plain.append(int(gains.argmax()))
        best = torch.maximum(best, full[:, plain[-1]])
    picks, counts = facility_location(grads, 12)
    assert picks.tolist() == plain and int(counts.sum()) == 120


@pytest.mark.parametrize("model_name", ["mlp", "mtgnn"])
def test_last_layer_gradients_match_per_window_autograd(series, model_name):
    torch.manual_seed(0)
    model = MODELS.get(model_name)(series.num_locations, series.num_channels, len(series.data.targets))
    source = RealSource(series.split("train"))
    grads = last_layer_gradients(model, source, batch_size=16)
    assert model.training and all(p.requires_grad for p in model.parameters())
    last = model.end_conv_2 if model_name == "mtgnn" else model.net[-1]
    model.eval()
    for i in (0, 7, len(source) - 1):
        x, y, mask = source.batch(np.array([i]))
        loss = per_sample_loss(model(x, source.loc_input), y, mask, None, "mse").sum()
        weight, bias = torch.autograd.grad(loss, [last.weight, last.bias])
        torch.testing.assert_close(grads[i], torch.cat([weight.flatten(), bias]), atol=1e-6, rtol=1e-4)


def test_feature_matrices_respect_the_memory_cap(series):
    train, rng = series.split("train"), np.random.default_rng(0)
    width = 12 * series.num_channels + 12 * len(series.data.targets)   # x and y per location
    assert window_features(train, rng, 1.0).shape == (len(train), 8 * width)
    assert location_features(train, rng, 1.0).shape == (8, len(train) * width)
    tiny_cap = 3 * len(train) * width * 4 / 2**30   # room for 3 locations of every window
    assert window_features(train, rng, tiny_cap).shape == (len(train), 3 * width)
    assert location_features(train, rng, tiny_cap).shape[1] < len(train) * width


# --- methods: budgets, determinism, online reselection -------------------------------------------

@pytest.mark.parametrize("name", ["kcenter", "herding", "craig", "stemdist-kcenter"])
def test_same_seed_same_selection_and_exact_budget(series, name):
    train, budget = series.split("train"), Compression(0.05)
    method = METHODS.get(name).make({})
    first, second = (method.condense(train, budget, make_ctx(series, 3)) for _ in range(2))
    m, n = budget.sizes(len(train), series.num_locations, method.is_bidimensional(budget))
    assert first.shape(train) == (m, n)
    assert len(set(first.indices.tolist())) == m
    np.testing.assert_array_equal(first.indices, second.indices)
    if first.locations is not None:
        np.testing.assert_array_equal(first.locations, second.locations)
    if first.sample_weight is not None:
        torch.testing.assert_close(first.sample_weight, second.sample_weight)


def test_craig_condense_picks_the_facility_location_set_of_its_models_gradients(series):
    """Without warm-up CRAIG selects with the freshly built evaluation model: rebuild that model, take
    its last-layer gradients, and the picks, the counts gamma (windows whose nearest pick each one is)
    and the weights (gamma scaled to mean 1) must be those of the brute-force greedy."""
    train, budget = series.split("train"), Compression(0.05)
    condensed = METHODS.get("craig").make({"warmup_epochs": 0}).condense(train, budget, make_ctx(series, 3))
    model = make_ctx(series, 3).model_factory(series.num_locations)    # same seed: the same initial model
    grads = last_layer_gradients(model, RealSource(train), batch_size=32)
    k = budget.sizes(len(train), series.num_locations, bidimensional=False)[0]
    picks, counts = brute_force_facility_location(grads, k)
    assert condensed.indices.tolist() == picks
    assert condensed.info["gamma"] == counts and len(set(counts)) > 1    # unequal weights
    np.testing.assert_allclose(condensed.sample_weight.numpy(), np.array(counts) * k / len(train), rtol=1e-6)


def test_craig_reselects_with_the_model_being_trained(series):
    train, ctx = series.split("train"), make_ctx(series, 0)
    method = METHODS.get("craig").make({"warmup_epochs": 0, "reselect_every": 2})
    condensed = method.condense(train, Compression(0.05), ctx)
    model = ctx.model_factory(series.num_locations)
    _, schedule = method.training_plan(condensed, train, model, ctx)
    ids, weights = schedule.epoch(0, 4)
    np.testing.assert_array_equal(ids, condensed.indices)
    np.testing.assert_allclose(weights, condensed.sample_weight.numpy())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=ctx.torch_generator))
    assert np.array_equal(schedule.epoch(1, 4)[0], ids)
    new_ids, new_weights = schedule.epoch(2, 4)
    assert len(new_ids) == len(ids) and not np.array_equal(new_ids, ids)
    assert new_weights.mean() == pytest.approx(1.0) and model.training


def test_coresets_run_through_the_harness(tmp_path):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "kcenter,herding,craig,stemdist-kcenter", "--dataset", "synthetic-traffic",
                 "--size", "locations=12,steps=400", "--budgets", "0.05", "--epochs", "2",
                 "--set", "craig.reselect_every=1", "--quiet", "--results", results]) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    assert set(records) == {"kcenter", "herding", "craig", "stemdist-kcenter"}
    for name, r in records.items():
        assert r["status"] == "ok", r.get("error")
        bidim = name == "stemdist-kcenter"
        m, n = Compression(0.05).sizes(r["split_windows"]["train"], 12, bidim)
        assert r["reduced_shape"][0] == m and r["reduced_shape"][2] == n
        assert r["model"] == ("mtgnn-le" if bidim else "mtgnn") and r["time_s"]["condense"] > 0
    assert records["stemdist-kcenter"]["reduced_shape"][2] < 12
    craig = records["craig"]
    assert craig["visits_per_epoch"] == [craig["reduced_shape"][0]] * 2
