"""STemDist: clustering (Algorithm 3), gradient matching (Algorithm 1), variants, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.distill.matching import layerwise_cosine_distance
from methods.location_clustering import (cluster_locations, kmeans, location_features,
                                         normalised_training_series)
from methods.stemdist import STemDist, STemDistSingleFeature, STemDistWithoutGC, SubsetAdam, partition
from stbench.budgets import Compression
from stbench.data.windows import Series, WindowSpec

from conftest import make_context, tiny_data


@pytest.fixture
def series():
    return Series(tiny_data(steps=400, locations=40, channels=2), WindowSpec(12, 12))


def test_cluster_weights_sum_to_one_and_centroids_are_member_means(series):
    train = series.split("train")
    clustered = cluster_locations(train, 6, 300, torch.Generator().manual_seed(0))
    assert clustered.weights.sum().item() == pytest.approx(1.0)
    assert (clustered.weights > 0).all()                                   # no empty cluster
    x, y, y_mask = normalised_training_series(train)
    for j in range(6):
        members = clustered.assignment == j
        torch.testing.assert_close(clustered.x[:, j], x[:, members].mean(dim=1))
        expected_y = (y[:, members] * y_mask[:, members]).sum(1) / y_mask[:, members].sum(1).clamp_min(1)
        torch.testing.assert_close(clustered.y[:, j], expected_y)


def test_step_features_have_the_distances_of_flattened_windows(series):
    train = series.split("train")
    x, _, _ = normalised_training_series(train)
    feats = location_features(x, len(train), 12)
    windows = train.batch(np.arange(len(train))).x                       # (M, L_in, N, C)
    flat = windows.permute(2, 0, 1, 3).reshape(x.shape[1], -1)
    exact = "donot_use_mm_for_euclid_dist"
    torch.testing.assert_close(torch.cdist(feats, feats, compute_mode=exact), torch.cdist(flat, flat, compute_mode=exact),
                               rtol=1e-4, atol=1e-4)


def test_kmeans_separates_obvious_clusters_and_repairs_empty_ones():
    pts = torch.cat([torch.zeros(5, 2), torch.full((5, 2), 10.0), torch.full((1, 2), 10.0)])
    assign, centroids, _ = kmeans(pts, 3, 300, torch.Generator().manual_seed(1))
    assert len(set(assign[:5].tolist())) == 1 and assign[0] != assign[5]
    assert torch.bincount(assign, minlength=3).min() > 0               # duplicates still give 3 clusters


def test_gradient_distance_equals_hand_computed_value():
    real = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 1.0])]
    syn = [torch.tensor([[2.0, 0.0], [3.0, 0.0]]), torch.tensor([1.0, -1.0])]
    # row 0: cos = 1 -> 0; row 1: cos = 0 -> 1; the bias is left out as in DC
    assert layerwise_cosine_distance(real, syn).item() == pytest.approx(1.0, abs=1e-5)
    assert layerwise_cosine_distance(real, syn, include_1d=True).item() == pytest.approx(2.0, abs=1e-5)


def test_gradient_distance_on_a_tiny_model():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0]]))
    x_real, y_real = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0]])   # grad = 2 * (1 - 0) * [1, 0]
    x_syn, y_syn = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0]])     # grad = 2 * (0 - 1) * [0, 1]
    g_r = torch.autograd.grad(((lin(x_real) - y_real) ** 2).mean(), [lin.weight])
    g_s = torch.autograd.grad(((lin(x_syn) - y_syn) ** 2).mean(), [lin.weight])
    assert g_r[0].tolist() == [[2.0, 0.0]] and g_s[0].tolist() == [[0.0, -2.0]]
    assert layerwise_cosine_distance(list(g_r), list(g_s)).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("ratio, expected", [(0.005, (22, 2)), (0.01, (22, 4))])
def test_synthetic_shapes_for_both_budgets(series, ratio, expected):
    ctx = make_context(series)
    method = STemDist.make({"outer_iterations": 1, "distill_iterations": 1, "model_epochs": 1})
    out = method.condense(series.split("train"), Compression(ratio), ctx)
    m, n = expected
    assert out.x.shape == (m, 12, n, 2) and out.y.shape == (m, 12, n, 1)
    assert out.location_weight.shape == (n,) and out.hints["location_subsets"] == 4
    assert len(out.info["outer_iteration_s"]) == 1


def _matching_setup(series, seed=0):
    ctx = make_context(series, seed)
    method = STemDist.make({"matching_dropout": False})
    train = series.split("train")
    clustered = cluster_locations(train, 8, 50, ctx.torch_generator)
    ids = torch.arange(16)
    real = clustered.gather(ids)
    x_s = clustered.gather(torch.tensor([3, 40, 90]))[0].clone().requires_grad_(True)
    y_s = clustered.gather(torch.tensor([3, 40, 90]))[1].clone().requires_grad_(True)
    model = ctx.model_factory(8, "mtgnn-le")
    model.eval()
    params = [p for p in model.parameters()]
    return method, clustered, real, x_s, y_s, model, params


def test_distance_falls_over_a_short_distillation(series):
    method, clustered, real, x_s, y_s, model, params = _matching_setup(series)
    i_c, subset = clustered.location_input(), torch.arange(8)
    opt = SubsetAdam([x_s, y_s], 8, lr=0.01)
    start = method.matching_distance(model, params, real, i_c, x_s, y_s, subset, clustered.weights).item()
    for _ in range(30):
        dist = method.matching_distance(model, params, real, i_c, x_s, y_s, subset, clustered.weights)
        opt.step(torch.autograd.grad(dist, [x_s, y_s]), subset)
    end = method.matching_distance(model, params, real, i_c, x_s, y_s, subset, clustered.weights).item()
    assert end < 0.8 * start


def test_each_subset_update_touches_only_its_locations(series):
    method, clustered, real, x_s, y_s, model, params = _matching_setup(series)
    i_c = clustered.location_input()
    opt = SubsetAdam([x_s, y_s], 8, lr=0.01)
    for subset in (torch.tensor([0, 2, 5]), torch.tensor([1, 3]), torch.tensor([4, 6, 7])):
        before_x, before_y = x_s.detach().clone(), y_s.detach().clone()
        dist = method.matching_distance(model, params, real, i_c, x_s, y_s, subset, clustered.weights)
        opt.step(torch.autograd.grad(dist, [x_s, y_s]), subset)
        others = torch.tensor([i for i in range(8) if i not in subset.tolist()])
        torch.testing.assert_close(x_s.detach()[:, :, others], before_x[:, :, others], rtol=0, atol=0)
        torch.testing.assert_close(y_s.detach()[:, :, others], before_y[:, :, others], rtol=0, atol=0)
        assert not torch.equal(x_s.detach()[:, :, subset], before_x[:, :, subset])


def test_partition_is_disjoint_and_complete():
    parts = partition(10, 4, torch.Generator().manual_seed(0), "cpu")
    assert sorted(torch.cat(parts).tolist()) == list(range(10)) and len(parts) == 4


def test_same_seed_same_synthetic_set(series):
    params = {"outer_iterations": 1, "distill_iterations": 2, "model_epochs": 1}
    sets = [STemDist.make(params).condense(series.split("train"), Compression(0.01), make_context(series, 7))
            for _ in range(2)]
    torch.testing.assert_close(sets[0].x, sets[1].x, rtol=0, atol=0)
    torch.testing.assert_close(sets[0].y, sets[1].y, rtol=0, atol=0)
    other = STemDist.make(params).condense(series.split("train"), Compression(0.01), make_context(series, 8))
    assert not torch.equal(sets[0].x, other.x)


def test_variants(series):
    params = {"outer_iterations": 1, "distill_iterations": 1, "model_epochs": 1}
    wo_gc = STemDistWithoutGC.make(params).condense(series.split("train"), Compression(0.01), make_context(series))
    assert wo_gc.hints["location_subsets"] == 1
    torch.testing.assert_close(wo_gc.location_weight, torch.full((4,), 0.25))
    one = STemDistSingleFeature.make(params).condense(series.split("train"), Compression(0.01), make_context(series))
    assert one.x.shape[-1] == 1 and one.hints["input_channels"] == [0]
