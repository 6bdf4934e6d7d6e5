"""Static selection baselines (``baselines/selection``): each scoring rule on constructed inputs, then every
selector end to end through the CLI (subset size, determinism, selection cost in the record).

Everything runs on a tiny synthetic dataset with the per-location MLP, one torch thread.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import baselines.selection.glister as glister_module
from baselines.coreset.craig import facility_location
from baselines.coreset.kcenter import kcenter_greedy
from baselines.selection.cal import contrastive_scores, nearest_neighbours
from baselines.selection.forgetting import Forgetting, fluctuation, forgetting_events
from baselines.selection.grand import grand_scores
from baselines.selection.graphcut import graph_cut_greedy
from baselines.selection.kmeans import kmeans, nearest_distinct
from baselines.selection.proxy import Proxy, ProxySettings, proxy_settings
from baselines.selection.uncertainty import (entropy_score, has_dropout, least_confidence_score, margin_score,
                                             mc_dropout, predictive_samples)
from stbench.budgets import Retention
from stbench.cli import main
from stbench.data.catalog import load_dataset
from stbench.data.windows import Series, WindowSpec, split_bounds
from stbench.measure import Meter
from stbench.plugins import load_builtin
from stbench.protocols import RunContext
from stbench.registry import METHODS, MODELS
from stbench.results import ResultStore
from stbench.sources import RealSource
from stbench.train import per_sample_loss

SELECTORS = ["cd", "kmeans", "least-confidence", "entropy", "margin", "forgetting", "grand", "cal", "glister",
             "graphcut", "falo"]
SIZE = {"locations": 4, "steps": 200}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_series() -> Series:
    load_builtin()
    return Series(load_dataset("synthetic-traffic", None, **SIZE), WindowSpec(), "cpu")


@pytest.fixture(scope="module")
def series():
    return make_series()


def make_ctx(series, seed: int = 0, model: str = "mlp", preset: str = "smoke") -> RunContext:
    def factory(num_locations, model_name=None, in_channels=None):
        cls = MODELS.get(model_name or model)
        return cls(num_locations, in_channels or series.num_channels, len(series.data.targets),
                   series.spec.input_len, series.spec.output_len)

    return RunContext(seed=seed, device=torch.device("cpu"), rng=np.random.default_rng(seed),
                      torch_generator=torch.Generator().manual_seed(seed), meter=Meter(), preset=preset,
                      series=series, model_factory=factory, dataset_defaults={})


def started(name: str, series, keep: int, seed: int = 0, **params):
    selector = METHODS.get(name).make(params)
    n = len(series.split("train"))
    selector.start(n, Retention(keep / n), make_ctx(series, seed))
    assert len(selector.ids) == keep
    return selector


# --- Forgetting -------------------------------------------------------------------------------------

def test_forgetting_counts_learned_to_forgotten_transitions():
    history = np.array([[0.5, 0.5, 3.0, 2.0, 0.5],
                        [2.0, 0.5, 3.0, 0.5, 0.9],
                        [0.5, 2.0, 3.0, 0.5, 1.1],
                        [2.0, 2.0, 3.0, 2.0, 0.2]])          # (epochs, windows)
    # threshold 1: window 0 forgets twice, 1 once, 2 is never learned, 3 once (learned late), 4 once
    np.testing.assert_array_equal(forgetting_events(history, 1.0), [2, 1, 0, 1, 1])
    # per-epoch thresholds: at epoch 2 the bar is 1.2, so window 4 (1.1) stays learned
    np.testing.assert_array_equal(forgetting_events(history, [1.0, 1.0, 1.2, 1.0]), [2, 1, 0, 1, 0])
    np.testing.assert_allclose(fluctuation(history), [3.0, 1.5, 0.0, 1.5, 0.4 + 0.2])


def test_forgetting_keeps_the_most_forgotten_windows_then_the_most_fluctuating(series, monkeypatch):
    n = len(series.split("train"))
    history = np.ones((4, n))                                  # the epoch medians stay 1: "learned" = loss <= 1
    history[:, 0] = [0.5, 2.0, 0.5, 2.0]                       # two events
    history[:, 1] = [0.5, 2.0, 2.0, 2.0]                       # one event, fluctuation 1.5
    history[:, 2] = [0.5, 1.5, 1.5, 1.5]                       # one event, fluctuation 1.0
    history[:, 3] = [3.0, 3.0, 3.0, 3.0]                       # never learned: no event
    history[:, 4] = [2.0, 0.5, 0.5, 0.5]                       # learned, never forgotten

    def fake_proxy(self, train, fit_ids=None, on_batch=None):
        assert self.settings.epochs == 4
        for epoch in range(4):
            order = np.random.default_rng(epoch).permutation(n)
            for begin in range(0, n, 16):
                ids = order[begin:begin + 16]
                on_batch(epoch, ids, torch.as_tensor(history[epoch, ids]))

    monkeypatch.setattr(Forgetting, "new_proxy", fake_proxy)
    selector = started("forgetting", series, 3, proxy_epochs=4)
    assert selector.ids.tolist() == [0, 1, 2]
    info = selector.report()["selection_info"]
    assert info["max_events"] == 2 and info["share_forgotten"] == pytest.approx(3 / n)


def test_forgetting_trains_at_least_two_epochs_by_default(series):
    selector = started("forgetting", series, 10)
    assert selector.settings.epochs == 2 and selector.report()["selection_info"]["proxy_epochs_run"] == 2


# --- GraNd --------------------------------------------------------------------------------------------

LAST_LAYER = {"mlp": lambda model: model.net[-1], "agcrn": lambda model: model.end_conv}   # 1x1-free conv: AGCRN


@pytest.mark.parametrize("model_name, loss", [("mlp", "mse"), ("mlp", "mae"), ("agcrn", "mse")])
def test_grand_is_the_mean_gradient_norm_over_proxies_computed_by_autograd(series, model_name, loss):
    torch.manual_seed(0)
    ctx = make_ctx(series, model=model_name)
    source = RealSource(series.split("train"), np.arange(8))
    settings = ProxySettings(epochs=1, batch=3, loss=loss, lr=1e-2, model=None)
    proxies = [Proxy(ctx, settings, source) for _ in range(3)]
    for proxy in proxies:
        proxy.fit()
    first, second = (next(p.model.parameters()) for p in proxies[:2])
    assert not torch.equal(first, second)                                # independent initialisations
    for scope in ("last", "all"):
        expected = torch.zeros(len(source), dtype=torch.float64)
        for proxy in proxies:
            model = proxy.model
            model.eval()
            params = list(LAST_LAYER[model_name](model).parameters()) if scope == "last" else list(model.parameters())
            for i in range(len(source)):
                x, y, mask = source.batch(np.array([i]))
                value = per_sample_loss(model(x, source.loc_input), y, mask, None, loss).sum()
                grads = torch.autograd.grad(value, params, allow_unused=True)
                expected[i] += torch.sqrt(sum(g.double().pow(2).sum() for g in grads if g is not None)) / len(proxies)
        torch.testing.assert_close(grand_scores(proxies, scope).double(), expected, rtol=1e-4, atol=1e-7)


def test_grand_keeps_the_largest_scores_and_averages_its_repeats(series):
    selector = started("grand", series, 8, repeats=2)
    info = selector.report()["selection_info"]
    assert info["proxies"] == 2 and info["proxy_epochs_run"] == 2 and info["repeats"] == 2


# --- K-Means prototypes -------------------------------------------------------------------------------

def test_kmeans_keeps_the_windows_nearest_the_centroids():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ring = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    points = torch.cat([c + ring for c in centres])            # the cluster means are the centre points 0, 5, 10
    gen = torch.Generator().manual_seed(0)
    centroids, _ = kmeans(points, 3, 20, gen)
    order = torch.argsort(centroids[:, 0] + 2 * centroids[:, 1])
    torch.testing.assert_close(centroids[order], centres)
    assert sorted(nearest_distinct(points, centroids).tolist()) == [0, 5, 10]
    # K-Center (farthest-first) keeps outlying windows instead: never only the centres
    assert sorted(kcenter_greedy(points, 3, first=0).tolist()) != [0, 5, 10]


def test_nearest_distinct_gives_a_shared_nearest_window_to_the_closest_centroid():
    points = torch.tensor([[0.0], [1.0], [5.0]])
    centroids = torch.tensor([[0.4], [0.1], [4.0]])           # both 0.4 and 0.1 are nearest to point 0
    assert nearest_distinct(points, centroids).tolist() == [1, 0, 2]


# --- GraphCut and facility location --------------------------------------------------------------------

def _similarity(features: torch.Tensor) -> np.ndarray:
    u = features / features.norm(dim=1, keepdim=True)
    return (0.5 + 0.5 * (u @ u.T)).double().numpy()


def _graph_cut(sim, subset, lam):
    s = list(subset)
    return sim[:, s].sum() - lam * sim[np.ix_(s, s)].sum()


def _facility(sim, subset):
    return sim[:, list(subset)].max(axis=1).sum() if len(subset) else 0.0


def _brute_force_greedy(objective, n, k):
    picks = []
    for _ in range(k):
        gains = [(objective(picks + [i]) - objective(picks), -i) for i in range(n) if i not in picks]
        picks.append(-max(gains)[1])
    return picks


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_graph_cut_greedy_takes_the_largest_marginal_gain_at_every_step(lam):
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(1))
    sim = _similarity(features)
    expected = _brute_force_greedy(lambda s: _graph_cut(sim, s, lam), 12, 6)
    assert graph_cut_greedy(features, 6, lam) == expected


def test_facility_location_greedy_takes_the_largest_marginal_gain_at_every_step():
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(2))
    sim = _similarity(features)
    expected = _brute_force_greedy(lambda s: _facility(sim, s), 12, 6)
    picks, _ = facility_location(features, 6, "cosine")
    assert picks.tolist() == expected


def _clusters() -> torch.Tensor:
    """Three orthogonal clusters (directions e_0, e_1, e_2), each its centre and two points tilted
    symmetrically along a private axis: ids 3c, 3c + 1, 3c + 2 for cluster c, the centre first."""
    rows = []
    for c in range(3):
        centre, tilt = torch.eye(6)[c], torch.eye(6)[3 + c]
        rows += [centre, (centre + 0.3 * tilt) / math.hypot(1, 0.3), (centre - 0.3 * tilt) / math.hypot(1, 0.3)]
    return torch.stack(rows)


def test_greedy_reaches_the_brute_force_optimum_on_separated_clusters():
    features = _clusters()
    sim = _similarity(features)
    subsets = list(itertools.combinations(range(9), 3))
    best_fl = max(_facility(sim, s) for s in subsets)
    picks, _ = facility_location(features, 3, "cosine")
    assert _facility(sim, picks.tolist()) == pytest.approx(best_fl)
    assert sorted(picks.tolist()) == [0, 3, 6]                               # every cluster's centre
    best_gc = max(_graph_cut(sim, s, 1.0) for s in subsets)
    greedy = graph_cut_greedy(features, 3, 1.0)
    assert _graph_cut(sim, greedy, 1.0) == pytest.approx(best_gc)
    assert sorted(greedy) == [0, 3, 6]


# --- Glister: the held-out gradient comes from the training split ----------------------------------

def test_glister_never_reads_the_validation_or_test_split(monkeypatch):
    clean = make_series()
    reference = started("glister", clean, 12, seed=3)

    poisoned = make_series()
    train_end = split_bounds(poisoned.data.shape[0], poisoned.spec.split)[0][1]
    poisoned.values[train_end:] = float("nan")                 # any read of val/test would spread NaN
    calls, held = [], {}
    real_split, real_holdout = Series.split, glister_module.held_out_split

    def spy_split(self, name):
        calls.append(name)
        return real_split(self, name)

    def spy_holdout(*args):
        held["ids"], held["candidates"] = real_holdout(*args)
        return held["ids"], held["candidates"]

    monkeypatch.setattr(Series, "split", spy_split)
    monkeypatch.setattr(glister_module, "held_out_split", spy_holdout)
    selector = started("glister", poisoned, 12, seed=3)
    assert set(calls) == {"train"}
    np.testing.assert_array_equal(selector.ids, reference.ids)
    n = len(poisoned.split("train"))
    assert len(held["ids"]) == round(0.1 * n) == selector.report()["selection_info"]["holdout"]
    assert not set(held["ids"].tolist()) & set(selector.ids.tolist())     # held-out windows are never kept
    assert held["ids"].max() < n


def test_glister_holdout_shrinks_when_the_budget_needs_the_windows(series):
    n = len(series.split("train"))
    selector = started("glister", series, n - 2, holdout=0.5)
    assert selector.report()["selection_info"]["holdout"] == 2


# --- uncertainty -------------------------------------------------------------------------------------

def test_uncertainty_scores_rank_the_high_variance_window_first():
    gen = torch.Generator().manual_seed(0)
    samples = 0.1 * torch.randn(30, 6, 3, 4, 1, generator=gen)   # (passes, windows, horizon, locations, channel)
    samples[:, 4] *= 20                                          # window 4: wide predictive spread
    for score in (least_confidence_score, entropy_score, lambda s: margin_score(s, 0.9)):
        assert int(torch.argmax(score(samples))) == 4
    var = samples.var(dim=0, unbiased=False).flatten(1)
    torch.testing.assert_close(least_confidence_score(samples), var.mean(1))
    torch.testing.assert_close(entropy_score(samples), (0.5 * torch.log(2 * math.pi * math.e * var)).sum(1),
                               rtol=1e-5, atol=1e-4)
    flat = samples.flatten(2).numpy()
    expected = (np.quantile(flat, 0.95, axis=0) - np.quantile(flat, 0.05, axis=0)).mean(1)
    np.testing.assert_allclose(margin_score(samples, 0.9).numpy(), expected, rtol=1e-5)


def test_entropy_ranks_by_the_geometric_mean_of_variances_least_confidence_by_the_arithmetic():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(200, 2, 4, generator=gen)
    base = (base - base.mean(0)) / base.std(0, unbiased=False)   # unit variance per output
    spread = torch.tensor([[3.0, 0.01, 0.01, 0.01], [0.6, 0.6, 0.6, 0.6]])   # one wide output vs four moderate
    samples = base * spread
    assert int(torch.argmax(least_confidence_score(samples))) == 0
    assert int(torch.argmax(entropy_score(samples))) == 1


class _ScaledDropout(torch.nn.Module):
    """Forecast = dropout(x) summed: its MC spread grows with the input's magnitude."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x, loc_input=None):
        return self.drop(x).sum(dim=(1, 3), keepdim=True).expand(-1, 2, -1, 1)


class _Windows:
    def __init__(self, x):
        self.x, self.loc_input = x, None

    def batch(self, ids):
        return self.x[torch.as_tensor(ids)], None, None


def test_mc_dropout_passes_rank_the_noisiest_window_first_and_restore_the_modes():
    x = torch.ones(5, 3, 2, 1)
    x[2] *= 10                                                   # the largest inputs: the largest MC spread
    model = _ScaledDropout().eval()
    assert has_dropout(model)
    torch.manual_seed(0)
    batches = list(predictive_samples([model], _Windows(x), np.arange(5), 2, 50, mc=True))
    scores = torch.cat([least_confidence_score(s) for _, s in batches])
    assert int(torch.argmax(scores)) == 2 and float(scores.min()) > 0
    assert not model.training and not model.drop.training
    with mc_dropout(model):
        assert model.drop.training and not model.training
    assert not model.drop.training


def test_the_mlp_has_no_dropout_so_auto_uses_an_ensemble(series):
    selector = started("least-confidence", series, 10, members=3)
    info = selector.report()["selection_info"]
    assert info["estimator"] == "ensemble" and info["proxies"] == 3 and info["samples"] == 3
    with pytest.raises(ValueError, match="no dropout"):
        started("entropy", series, 10, estimator="mc-dropout")


def test_mtgnn_proxy_uses_mc_dropout(series):
    selector = METHODS.get("margin").make({"passes": 3})
    n = len(series.split("train"))
    selector.start(n, Retention(0.2), make_ctx(series, model="mtgnn"))
    info = selector.report()["selection_info"]
    assert info["estimator"] == "mc-dropout" and info["proxies"] == 1 and info["samples"] == 3


# --- CD and Cal: divergences between Gaussian predictive distributions -----------------------------------

def test_prediction_features_turn_distances_into_mean_symmetric_gaussian_kl(series):
    ctx = make_ctx(series)
    source = RealSource(series.split("train"))
    proxy = Proxy(ctx, ProxySettings(epochs=1, batch=16, loss="mse", lr=1e-2, model=None), source)
    proxy.fit()
    feats, kept = proxy.whitened_predictions(np.random.default_rng(0), gib=4.0)
    assert kept == series.num_locations
    batches = list(proxy.passes())
    pred = torch.cat([b["pred"] for b in batches]).double()
    y = torch.cat([b["y"] for b in batches]).double()
    mask = torch.cat([b["mask"] for b in batches]).double()
    var = ((pred - y) ** 2 * mask).sum(0) / mask.sum(0)           # every output is observed here
    for i, j in ((0, 7), (3, 40)):
        kl = (pred[i] - pred[j]) ** 2 / (2 * var)                 # KL(N(mu_i, s^2) || N(mu_j, s^2)), symmetric
        assert float((feats[i] - feats[j]).pow(2).sum()) == pytest.approx(float(kl.mean()), rel=1e-4)
    capped, kept = proxy.whitened_predictions(np.random.default_rng(0), gib=4 * len(source) * 12 * 2 / 2 ** 30)
    assert kept == 2 and capped.shape == (len(source), 12 * 2)


def test_cal_scores_the_window_unlike_its_neighbours_highest():
    gen = torch.Generator().manual_seed(0)
    space = torch.randn(20, 3, generator=gen)
    brute = torch.cdist(space, space).fill_diagonal_(torch.inf).argsort(dim=1)[:, :4]
    assert torch.equal(nearest_neighbours(space, 4), brute)
    predictions = space.clone()                                  # forecasts follow the features ...
    predictions[11] += 5.0                                       # ... except window 11's
    scores = contrastive_scores(nearest_neighbours(space, 4), predictions)
    assert int(torch.argmax(scores)) == 11
    knn = brute[0]
    assert float(scores[0]) == pytest.approx(float((predictions[0] - predictions[knn]).pow(2).sum(1).mean()))


# --- parameters ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, params, message", [
    ("grand", {"scope": "full"}, "scope must be one of last, all"),
    ("grand", {"repeats": 0}, "repeats must be >= 1"),
    ("glister", {"holdout": 0.0}, "holdout must be in (0, 1)"),
    ("glister", {"eta": 0}, "eta must be > 0"),
    ("margin", {"coverage": 1.0}, "coverage must be in (0, 1)"),
    ("entropy", {"estimator": "bayes"}, "estimator must be one of auto, mc-dropout, ensemble"),
    ("cal", {"features": "pixels"}, "features must be one of embedding, gradient, prediction, window"),
    ("forgetting", {"threshold_quantile": 1.5}, "threshold_quantile must be in (0, 1)"),
    ("kmeans", {"kmeans_iterations": 0}, "kmeans_iterations must be >= 1"),
    ("cd", {"proxy_epochs": -1}, "proxy_epochs must be an integer >= 0 or None"),
    ("falo", {"proxy_model": "resnet"}, "proxy_model must be a registered model"),
    ("graphcut", {"lam": -1.0}, "lam must be >= 0"),
])
def test_bad_parameters_are_refused(name, params, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        METHODS.get(name).make(params)


def test_proxy_epochs_follow_the_preset_unless_set(series):
    params = METHODS.get("cd").Params
    assert proxy_settings(params(), make_ctx(series, preset="smoke")).epochs == 1
    assert proxy_settings(params(), make_ctx(series, preset="stprune")).epochs == 10   # Table A.2
    stprune = proxy_settings(params(), make_ctx(series, preset="stprune"))
    assert stprune.loss == "mae" and stprune.batch == 256
    assert proxy_settings(params(proxy_epochs=0, proxy_batch=7), make_ctx(series)).epochs == 0
    assert proxy_settings(params(proxy_batch=7), make_ctx(series)).batch == 7


def test_selection_does_not_move_torchs_global_generator(series):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    started("kmeans", series, 10)
    torch.testing.assert_close(torch.rand(3), expected)


# --- every selector through the CLI --------------------------------------------------------------------

def _run(results, seed: int = 0) -> dict:
    code = main(["run", "--methods", ",".join(SELECTORS), "--dataset", "synthetic-traffic", "--size",
                 "locations=4,steps=200", "--epochs", "2", "--model", "mlp", "--retention", "0.3", "--seeds",
                 str(seed), "--set", "grand.repeats=2", "--set", "members=2", "--quiet", "--results", str(results)])
    assert code == 0
    return {r["method"]: r for r in ResultStore(str(results)).records()}


def test_every_selector_runs_through_the_cli_deterministically_and_records_its_cost(tmp_path):
    first, second = _run(tmp_path / "a"), _run(tmp_path / "b")
    other = _run(tmp_path / "c", seed=1)
    assert sorted(first) == sorted(SELECTORS)
    for name in SELECTORS:
        a, b = first[name], second[name]
        for r in (a, b):
            assert r["status"] == "ok", (name, r.get("error"), r.get("traceback"))
        n = a["split_windows"]["train"]
        keep = round(0.3 * n)
        info = a["selection_info"]
        assert a["family"] == "selection" and a["visits_per_epoch"] == [keep, keep], name
        assert info["kept"] == keep and a["budget_achieved"] == pytest.approx(keep / n)
        # deterministic for the seed: the same subset and the same evaluation
        assert info["subset_sha256"] == b["selection_info"]["subset_sha256"], name
        assert a["metrics"]["test"] == b["metrics"]["test"], name
        # the selection cost (proxy training included) lands in the condense phase and the record
        assert info["proxies"] >= 1 and info["time_s"]["proxy_s"] > 0, name
        assert 0 < a["selection_time_s"] <= a["time_s"]["condense"], name
        assert sum(v for k, v in info["time_s"].items() if k != "total_s") <= info["time_s"]["total_s"] + 1e-6
    changed = [name for name in SELECTORS
               if other[name]["selection_info"]["subset_sha256"] != first[name]["selection_info"]["subset_sha256"]]
    assert len(changed) >= len(SELECTORS) - 2, changed            # another seed, (nearly always) another subset
