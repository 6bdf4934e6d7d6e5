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


def test_herding_on_a_symmetric_set_starts_at_the_mean():
    values = torch.tensor([[2.0], [-1.0], [1.0], [0.0], [-2.0]])
    picks = herding(values, 5).tolist()
    assert picks[0] == 3 and sorted(picks) == list(range(5))


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_craig_picks_one_per_duplicate_group_weighted_by_its_size(similarity):
    groups = torch.eye(4)[:3] * torch.tensor([[1.0], [2.0], [3.0]])
    grads = groups.repeat_interleave(5, dim=0)[torch.randperm(15, generator=torch.Generator().manual_seed(0))]
    picks, counts = facility_location(grads, 3, similarity)
    group_of = grads.argmax(dim=1)
    assert sorted(group_of[picks].tolist()) == [0, 1, 2]
    assert counts.tolist() == [5, 5, 5]


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
        assert float(first.sample_weight.mean()) == pytest.approx(1.0)
        assert sum(first.info["gamma"]) == len(train)


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
    assert sum(craig["condense_info"]["gamma"]) == craig["split_windows"]["train"]
