"""STemDist's ideas on other objectives (Table III bottom): ``stemdist-dc`` and ``stemdist-condtsf``.

Their defining properties: the bi-dimensional budget over STemDist's clustered locations, cluster-size
weights and the location encoder in every loss, and (stemdist-dc) DC's matching objective equal to
STemDist's with one location subset; (stemdist-condtsf) CondTSF's relabelling with an encoder expert
that sees the synthetic locations' eq. 3 input.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.distill.mtt import ClusteredView
from baselines.timeseries.condtsf import FrozenExperts
from methods.location_clustering import cluster_locations
from methods.stemdist import STemDist
from stbench.budgets import Compression
from stbench.cli import main
from stbench.data.windows import Series, WindowSpec
from stbench.registry import METHODS
from stbench.results import ResultStore
from conftest import make_context, tiny_data

BUDGET = Compression(0.05, 0.5, 0.1)   # 50% of the windows x 10% of 20 locations


@pytest.fixture(scope="module")
def train():
    return Series(tiny_data(locations=20), WindowSpec(), "cpu").split("train")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["stemdist-dc", "stemdist-condtsf"])
def test_the_set_covers_the_clustered_locations_with_their_cluster_weights(train, name, cache):
    ctx = make_context(train.series, seed=0)
    out = METHODS.get(name).make({"kmeans_iterations": 20}).condense(train, BUDGET, ctx)
    m_s, n_s = BUDGET.sizes(len(train), train.series.num_locations, bidimensional=True)
    assert tuple(out.x.shape) == (m_s, 12, n_s, train.series.num_channels)
    expected = cluster_locations(train, n_s, 20, make_context(train.series, seed=0).torch_generator)
    assert torch.equal(out.location_weight, expected.weights)        # w_i = |C_i| / N_T
    assert METHODS.get(name).make({}).params.model == "mtgnn-le"


def test_stemdist_dc_matches_stemdists_objective_with_one_location_subset(train):
    """DC's matching distance on the clustered view (encoder inputs, cluster weights) is STemDist's
    lines 10-15 for the single subset of all synthetic locations."""
    ctx = make_context(train.series, seed=0)
    clustered = cluster_locations(train, 4, 50, ctx.torch_generator)
    view = ClusteredView(clustered)
    x_s, y_s, mask = view.gather(torch.arange(6))
    x_s = (x_s + 0.1 * torch.randn_like(x_s)).requires_grad_(True)
    y_s = y_s.masked_fill(~mask, 0.0).requires_grad_(True)
    real = view.gather(torch.arange(10, 18))
    model = ctx.model_factory(4, "mtgnn-le").twice_differentiable()
    model.eval()
    params = [q for q in model.parameters() if q.requires_grad]
    dc = METHODS.get("stemdist-dc").make({})
    ours = dc.matching_distance(model, params, real, x_s, y_s, view)
    stemdist = STemDist().matching_distance(model, params, real, view.loc_input, x_s, y_s, torch.arange(4),
                                            clustered.weights)
    torch.testing.assert_close(ours, stemdist)
    unweighted = METHODS.get("dc").make({}).matching_distance(
        model, params, real, x_s, y_s, type("V", (), {"location_weight": torch.ones(4), "loc_input": view.loc_input,
                                                         "syn_loc": staticmethod(view.syn_loc)})())
    assert not torch.allclose(ours, unweighted)                    # the cluster weights enter the losses


def test_stemdist_condtsf_expert_forecasts_with_the_synthetic_location_input(train):
    ctx = make_context(train.series, seed=0)
    model = ctx.model_factory(3, "mtgnn-le")
    theta = torch.cat([q.detach().reshape(-1) for q in model.parameters() if q.requires_grad])
    x = torch.randn(5, 12, 3, train.series.num_channels)
    expert = FrozenExperts([[theta]], model, np.random.default_rng(0), chunk=2,
                           location_input=ClusteredView.syn_loc)
    model.eval()
    with torch.no_grad():
        direct = model(x, x.mean(dim=0).permute(1, 0, 2))             # eq. 3 over the whole set, not a chunk
    torch.testing.assert_close(expert(x), direct)


def test_stemdist_condtsf_relabels_on_its_schedule(train, cache):
    ctx = make_context(train.series, seed=0)
    method = METHODS.get("stemdist-condtsf").make({"period": 1, "iterations": 3, "beta": 0.5, "kmeans_iterations": 20})
    out = method.condense(train, BUDGET, ctx)
    assert out.info["plugin_iterations"] == [0, 1, 2] and out.info["plugin_steps"] == 3
    errors = out.info["label_error"]
    assert errors[0] > 0 and all(np.isfinite(errors))
    assert method.label_source() == "expert-relabelled"


def test_stemdist_condtsf_offers_only_the_mtt_backbone():
    with pytest.raises(ValueError, match="base"):
        METHODS.get("stemdist-condtsf").make({"base": "dc"})


def test_both_run_through_the_runner_on_the_encoder_model(tmp_path, cache):
    results = str(tmp_path / "res")
    assert main(["run", "--methods", "stemdist-dc,stemdist-condtsf", "--dataset", "synthetic-traffic",
                 "--size", "locations=20,steps=300", "--budgets", "0.05=0.5x0.1", "--epochs", "1",
                 "--set", "stemdist-dc.kmeans_iterations=20", "--set", "stemdist-condtsf.kmeans_iterations=20",
                 "--quiet", "--results", results]) == 0
    records = {r["method"]: r for r in ResultStore(results).records()}
    for name, record in records.items():
        assert record["status"] == "ok", record.get("error")
        assert record["model"] == "mtgnn-le" and record["reduced_shape"][2] == 2
        assert record["budget_achieved"] == pytest.approx(0.05, rel=0.1) and record["time_s"]["condense"] > 0
    assert records["stemdist-dc"]["label_source"] == "learned"
    assert records["stemdist-condtsf"]["label_source"] == "expert-relabelled"
