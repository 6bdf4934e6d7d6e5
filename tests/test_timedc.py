"""TimeDC and its TSFE backbone: channel independence, exact decomposition, the frequency and trajectory
losses, the expert curriculum, a moving synthetic set, and a run through the runner."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import stbench.models  # noqa: F401  (registers tsfe)
from baselines.distill.synthetic import real_batch
from baselines.distill.trajectories import FlatModel
from baselines.timeseries.timedc import (TimeDC, cosine, curriculum_order, feature_parts, frequency_loss,
                                         normalised_distance)
from stbench.budgets import Compression
from stbench.data.windows import Series, WindowSpec
from stbench.models.tsfe import TSFE, moving_average

from conftest import make_context, tiny_data

BUDGET = Compression(0.05)
SMALL = {"iterations": 4, "num_experts": 3, "expert_train_epochs": 3, "syn_steps": 2, "expert_epochs": 1,
         "max_start_epoch": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and OpenMP barriers on a busy machine cost far more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def series():
    return Series(tiny_data(steps=300, locations=6, channels=1), WindowSpec(12, 12))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("timedc-experts"))


def _tsfe(n=5, c=2, c_out=1, **kw):
    torch.manual_seed(0)
    return TSFE(n, c, c_out, 12, 12, **kw).eval()


# --- TSFE --------------------------------------------------------------------------------------------

def test_tsfe_is_channel_independent():
    model = _tsfe()
    x = torch.randn(3, 12, 5, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
        perm = torch.tensor([3, 0, 4, 1, 2])
        torch.testing.assert_close(model(x[:, :, perm]), out[:, :, perm], rtol=1e-5, atol=1e-6)
        changed = x.clone()
        changed[:, :, 2] = torch.randn(3, 12, 2) * 5
        out2 = model(changed)
        others = [0, 1, 3, 4]
        torch.testing.assert_close(out2[:, :, others], out[:, :, others], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out2[:, :, 2], out[:, :, 2])
        feats, feats2 = model.features(x), model.features(changed)
        for name in ("trend", "remainder"):
            assert len(feats[name]) == 3 and feats[name][0].shape == (3, 5, 6, 16)
            for h, h2 in zip(feats[name], feats2[name]):
                torch.testing.assert_close(h2[:, others], h[:, others], rtol=1e-5, atol=1e-6)
    assert TSFE.inductive and model(torch.randn(2, 12, 9, 2)).shape == (2, 12, 9, 1)   # any N


def test_tsfe_parameter_count_is_documented():
    assert sum(p.numel() for p in _tsfe(c=1).parameters()) == 35036
    assert sum(p.numel() for p in _tsfe(c=3, c_out=2).parameters()) == 2 * (80 + 64 * 2 + 96 + 3 * 5392 + 1164 * 2 + 6)


def test_tsfe_decomposition_reconstructs_its_input():
    model = _tsfe(kernel=5)
    x = torch.randn(2, 12, 5, 2, generator=torch.Generator().manual_seed(2))
    trend, remainder = model.decompose(x)
    torch.testing.assert_close(trend + remainder, x, rtol=0, atol=1e-6)
    # the trend is the edge-padded moving average: step 0 = (3 x_0 + x_1 + x_2) / 5, step 5 = mean(x_3..x_7)
    torch.testing.assert_close(trend[:, 0], (3 * x[:, 0] + x[:, 1] + x[:, 2]) / 5)
    torch.testing.assert_close(trend[:, 5], x[:, 3:8].mean(dim=1))
    _, flat = model.decompose(torch.full((2, 12, 5, 2), 3.5))
    assert flat.abs().max() < 1e-6                                   # a constant has no remainder
    h = torch.randn(2, 5, 6, 16)
    t, s = feature_parts(h, 3)                                       # Eq. 6 on features, along the patches
    torch.testing.assert_close(t + s, h, rtol=0, atol=1e-6)
    torch.testing.assert_close(t, moving_average(h, 3, dim=2))
    torch.testing.assert_close(t[:, :, 3], h[:, :, 2:5].mean(dim=2))


# --- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["amplitude", "complex", "none"])
def test_frequency_loss_is_zero_for_identical_and_scale_invariant(mode):
    model = _tsfe()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        a = model.features(torch.randn(7, 12, 5, 2, generator=g))
        b = model.features(torch.randn(3, 12, 5, 2, generator=g) * 2 + 1)

    def scaled(feats, factor):
        return {k: [h * factor for h in v] for k, v in feats.items()}

    assert frequency_loss(a, a, mode=mode).item() == pytest.approx(0.0, abs=1e-6)
    base = frequency_loss(a, b, mode=mode).item()
    assert base > 1e-4
    assert frequency_loss(a, scaled(b, 7.0), mode=mode).item() == pytest.approx(base, rel=1e-4, abs=1e-7)
    assert frequency_loss(scaled(a, 0.2), b, mode=mode).item() == pytest.approx(base, rel=1e-4, abs=1e-7)


@pytest.fixture(scope="module")
def setup(series, cache):
    """(method, ctx, view, buffers, student, feature net, x_s, y_s, real batch)."""
    ctx = make_context(series, 0)
    train = series.split("train")
    method = TimeDC.make({**SMALL, "cache_dir": cache})
    view, m_s = method.view(train, BUDGET, ctx)
    model = ctx.model_factory(6, "tsfe").twice_differentiable()
    student = FlatModel(model)
    student.model.eval()
    info = {}
    buffers = method.experts(view, 1, ctx, info, num_params=sum(student.sizes))
    x_s, y_s = method.initial_set(view, 4, buffers, student, ctx, info)
    real = view.gather(np.arange(0, 64, 4))
    feature_net = copy.deepcopy(model).eval().requires_grad_(False)
    return method, ctx, view, buffers, student, feature_net, x_s, y_s, real


def test_trajectory_loss_is_one_when_the_student_never_moves(setup):
    method, ctx, view, buffers, student, feature_net, x_s, y_s, real = setup
    traj = buffers[0]
    start, target = traj[0], traj[1]
    theta = method.unroll(student, start, x_s, y_s, torch.tensor(0.01), view, ctx, steps=0)
    assert normalised_distance(theta, start, target).item() == 1.0
    terms = method.objective(student, feature_net, traj, 0, x_s, y_s, torch.tensor(0.0), real, view, ctx)
    assert terms["trajectory"].item() == 1.0                        # lr 0: theta_T = theta*_e0
    moved = method.unroll(student, start, x_s, y_s, torch.tensor(0.01), view, ctx).detach()
    assert normalised_distance(moved, start, moved).item() == 0.0   # landing on the target: 0
    assert normalised_distance(moved, start, target).item() != 1.0


def test_curriculum_order_is_the_sort_of_the_similarities(setup):
    assert curriculum_order([0.2, 0.9, -0.5, 0.9, 0.4]) == [1, 3, 4, 0, 2]   # descending, ties by index
    method, ctx, view, buffers, student, _, x_s, y_s, _ = setup
    lr = torch.tensor(0.05)
    order, scores = method.rank_experts(student, buffers, 1, x_s, y_s, lr, view, ctx)
    # the similarities, computed independently: plain SGD pre-update from each expert's epoch-1 snapshot
    expected = []
    for traj in buffers:
        theta = traj[1].clone()
        for _ in range(method.params.syn_steps):
            theta.requires_grad_(True)
            loss = ((student(theta, x_s, None) - y_s) ** 2).mean()
            theta = (theta - lr * torch.autograd.grad(loss, theta)[0]).detach()
        expected.append(cosine(theta - traj[1], traj[2] - traj[1]).item())
    assert sorted(order) == [0, 1, 2] and order == curriculum_order(expected)
    assert scores == pytest.approx([expected[k] for k in order], abs=1e-5)
    assert scores == sorted(scores, reverse=True)
    assert len(set(np.round(expected, 6))) == 3                      # distinct scores: the order is meaningful


def test_the_objective_falls_when_optimising_the_synthetic_set(setup):
    method, ctx, view, buffers, student, feature_net, x0, y0, real = setup
    x_s, y_s = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    lr = torch.tensor(0.05)
    opt = torch.optim.Adam([x_s, y_s], lr=0.05)

    def terms():
        return method.objective(student, feature_net, buffers[0], 0, x_s, y_s, lr, real, view, ctx)

    start = terms()
    assert all(start[k].item() > 0 for k in ("trajectory", "frequency", "task"))
    for _ in range(12):
        value = terms()["total"]
        opt.zero_grad()
        value.backward(inputs=[x_s, y_s])
        opt.step()
    assert terms()["total"].item() < 0.9 * start["total"].item()


@pytest.mark.parametrize("extra", [{}, {"curriculum": False, "fre_spectrum": "complex"}])
def test_a_short_distillation_moves_inputs_and_targets(series, cache, extra):
    train = series.split("train")
    out = TimeDC.make({**SMALL, "iterations": 5, "cache_dir": cache, **extra}).condense(
        train, BUDGET, make_context(series, 1))
    m = round(0.05 * len(train))
    assert out.x.shape == (m, 12, 6, 1) and out.y.shape == (m, 12, 6, 1)
    x0, y0, mask = real_batch(train, np.asarray(out.info["init_ids"]))
    y0 = y0.masked_fill(~mask, 0.0)
    assert (out.x - x0).abs().max() > 1e-4 and (out.y - y0).abs().max() > 1e-4
    assert len(out.info["loss"]) == 5 and all(np.isfinite(out.info["loss"]))
    if extra.get("curriculum", True):
        rounds = out.info["curriculum"]
        assert [len(r["order"]) for r in rounds] == [3, 3]          # 5 updates: a full round, then 2 of 3
        assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in rounds)
    else:
        assert out.info["curriculum"] == []


def test_params_are_checked():
    for bad in ({"fre_kernel": 4}, {"fre_kernel": 0}, {"fre_spectrum": "phase"}, {"fre_weight": -1},
                {"task_weight": -0.5}, {"curriculum_steps": -1}, {"real_batch": -2}):
        with pytest.raises(ValueError):
            TimeDC.make(bad)
    with pytest.raises(ValueError, match="real_batch"):
        TimeDC.make({"real_batch": 500}).check(100, 6)
    assert TimeDC().label_source() == "learned" and TimeDC().params.model == "tsfe"


# --- through the runner --------------------------------------------------------------------------

def test_timedc_through_the_runner(tmp_path, monkeypatch):
    from stbench import measure
    from stbench.runner import Grid, Runner

    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(measure, "usable_cpus", lambda: 1)
    params = {"timedc.iterations": 2, "timedc.syn_steps": 2, "timedc.expert_train_epochs": 2,
              "timedc.expert_epochs": 1}

    def run(results):
        grid = Grid(methods="timedc", dataset="synthetic-traffic", dataset_options={"locations": 8, "steps": 300},
                    budgets=[BUDGET], seeds=[0], model="auto", preset="smoke", device="cpu",
                    results=str(tmp_path / results), params=params, train_overrides={"epochs": 2})
        records = Runner(grid).run()
        assert len(records) == 1 and records[0]["status"] == "ok", records[0].get("error")
        return records[0]

    first, second = run("first"), run("second")
    n_train, n_loc = first["split_windows"]["train"], first["dataset_shape"][1]
    m, n = BUDGET.sizes(n_train, n_loc, bidimensional=False)
    assert first["reduced_shape"][0] == m and first["reduced_shape"][2] == n == n_loc
    assert first["budget_achieved"] == m / n_train
    assert second["metrics"]["test"] == first["metrics"]["test"]    # deterministic for the seed
    assert first["condense_info"]["experts_reused"] is False and second["condense_info"]["experts_reused"] is True
    assert first["time_s"]["condense"] > 0 and second["time_s"]["condense"] > 0
    assert second["condense_info"]["reused_setup_s"] == pytest.approx(first["condense_info"]["experts_build_s"])
    assert first["label_source"] == second["label_source"] == "learned"
    assert first["family"] == "timeseries" and first["method_params"]["model"] == "tsfe"
