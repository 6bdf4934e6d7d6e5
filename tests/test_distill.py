"""General dataset-distillation baselines: budget shapes, falling objectives, determinism, expert caches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.distill.dc import DC
from baselines.distill.synthetic import real_batch
from stbench.budgets import Compression
from stbench.data.windows import Series, WindowSpec

from conftest import make_context, tiny_data

BUDGET = Compression(0.05)


@pytest.fixture(scope="module")
def series():
    return Series(tiny_data(steps=300, locations=6, channels=1), WindowSpec(12, 12))


def _expected_m(series):
    return round(0.05 * len(series.split("train")))


def _same(a, b):
    torch.testing.assert_close(a.x, b.x, rtol=0, atol=0)
    torch.testing.assert_close(a.y, b.y, rtol=0, atol=0)


def _optimise_synthetic(train, model, objective, steps=20):
    """Adam on three synthetic windows against 32 real ones; the objective before and after."""
    real = real_batch(train, np.arange(32))
    x0, y0, mask = real_batch(train, np.array([5, 60, 120]))
    x_s, y_s = x0.clone().requires_grad_(True), y0.masked_fill(~mask, 0).clone().requires_grad_(True)
    opt = torch.optim.Adam([x_s, y_s], lr=0.01)
    start = objective(model, real, x_s, y_s).item()
    for _i in range(steps):
        loss = objective(model, real, x_s, y_s)
        opt.zero_grad()
        loss.backward(inputs=[x_s, y_s])
        opt.step()
    return start, objective(model, real, x_s, y_s).item()


# --- DC ------------------------------------------------------------------------------------------

DC_SMALL = {"outer_iterations": 1, "distill_iterations": 2, "model_epochs": 1}


def test_dc_shape_and_determinism(series):
    train = series.split("train")
    a = DC.make(DC_SMALL).condense(train, BUDGET, make_context(series, 3))
    assert a.x.shape == (_expected_m(series), 12, 6, 1) and a.y.shape == (_expected_m(series), 12, 6, 1)
    assert a.locations is None and len(a.info["outer_iteration_s"]) == 1
    b = DC.make(DC_SMALL).condense(train, BUDGET, make_context(series, 3))
    _same(a, b)
    c = DC.make(DC_SMALL).condense(train, BUDGET, make_context(series, 4))
    assert not torch.equal(a.x, c.x)


def test_dc_gradient_distance_falls(series):
    ctx = make_context(series, 0)
    train = series.split("train")
    method = DC.make({})
    model = ctx.model_factory(6, "mtgnn")
    model.eval()
    params = list(model.parameters())
    real = real_batch(train, np.arange(32))
    x0, y0, _ = real_batch(train, np.array([5, 60, 120]))
    x_s, y_s = x0.clone().requires_grad_(True), y0.masked_fill(~_, 0).clone().requires_grad_(True)
    opt = torch.optim.Adam([x_s, y_s], lr=0.01)
    start = method.matching_distance(model, params, real, x_s, y_s).item()
    for _i in range(30):
        dist = method.matching_distance(model, params, real, x_s, y_s)
        opt.zero_grad()
        dist.backward(inputs=[x_s, y_s])
        opt.step()
    end = method.matching_distance(model, params, real, x_s, y_s).item()
    assert end < 0.8 * start


# --- DM / IDM ------------------------------------------------------------------------------------

from baselines.distill.dm import DM  # noqa: E402
from baselines.distill.idm import IDM  # noqa: E402


@pytest.mark.parametrize("cls, params", [
    (DM, {"iterations": 3, "teacher_epochs": 1}),
    (DM, {"iterations": 3, "label_mode": "learned"}),
    (IDM, {"iterations": 3, "teacher_epochs": 1, "train_steps": 2, "queue_init": 2, "queue_size": 3,
           "reg_weight": 0.1}),
])
def test_dm_family_shape_and_determinism(series, cls, params):
    train = series.split("train")
    a = cls.make(params).condense(train, BUDGET, make_context(series, 3))
    assert a.x.shape == (_expected_m(series), 12, 6, 1) and a.y.shape == (_expected_m(series), 12, 6, 1)
    assert len(a.info["matching_loss"]) == 3
    _same(a, cls.make(params).condense(train, BUDGET, make_context(series, 3)))
    if params.get("label_mode") == "learned":
        assert "teacher_s" not in a.info
    else:
        assert a.info["teacher_s"] > 0


def test_idm_queue_is_capped(series):
    method = IDM.make({"iterations": 3, "teacher_epochs": 1, "train_steps": 1, "queue_init": 2, "queue_size": 3})
    method.condense(series.split("train"), BUDGET, make_context(series, 0))
    assert len(method.queue) == 3


@pytest.mark.parametrize("preset, steps", [("smoke", 1), ("quick", 2), ("paper", 20)])
def test_idm_queue_training_steps_follow_the_preset(series, monkeypatch, preset, steps):
    from baselines.distill import idm as idm_module
    calls = []
    monkeypatch.setattr(idm_module, "train_step", lambda *args, **kwargs: calls.append(1))
    IDM.make({"iterations": 2, "teacher_epochs": 1}).condense(
        series.split("train"), BUDGET, make_context(series, 0, preset=preset))
    assert len(calls) == 2 * steps                   # per matching iteration, the picked model's real steps


@pytest.mark.parametrize("label_mode", ["teacher", "learned"])
def test_dm_embedding_distance_falls(series, label_mode):
    ctx = make_context(series, 0)
    train = series.split("train")
    method = DM.make({"label_mode": label_mode})
    model = ctx.model_factory(6, "mtgnn")
    model.eval()
    start, end = _optimise_synthetic(train, model, method.embedding_distance)
    assert end < 0.5 * start


# --- FRePo ---------------------------------------------------------------------------------------

from baselines.distill.frepo import FRePo, krr_predict  # noqa: E402


def test_krr_interpolates_support_points():
    f = torch.eye(3)
    y = torch.arange(3.0).view(3, 1, 1, 1)
    torch.testing.assert_close(krr_predict(f, f, y, 1e-9), y, rtol=1e-5, atol=1e-5)


def test_frepo_shape_determinism_and_resets(series):
    train = series.split("train")
    params = {"steps": 4, "pool_size": 2, "max_online_updates": 2}
    a = FRePo.make(params).condense(train, BUDGET, make_context(series, 3))
    assert a.x.shape == (_expected_m(series), 12, 6, 1) and a.y.shape == (_expected_m(series), 12, 6, 1)
    assert len(a.info["krr_loss"]) == 4 and a.info["resets"] >= 1
    _same(a, FRePo.make(params).condense(train, BUDGET, make_context(series, 3)))


def test_frepo_krr_loss_falls(series):
    ctx = make_context(series, 0)
    train = series.split("train")
    method = FRePo.make({})
    model = ctx.model_factory(6, "mtgnn")
    start, end = _optimise_synthetic(train, model, method.krr_loss)
    assert end < 0.8 * start


# --- MTT -----------------------------------------------------------------------------------------

from baselines.distill import mtt as mtt_module  # noqa: E402
from baselines.distill.mtt import MTT, STemDistMTT  # noqa: E402


def _mtt_params(tmp_path, **extra):
    return {"iterations": 2, "num_experts": 1, "expert_train_epochs": 3, "syn_steps": 2,
            "cache_dir": str(tmp_path), **extra}


def test_mtt_shape_cache_reuse_and_determinism(series, tmp_path, monkeypatch):
    train = series.split("train")
    a = MTT.make(_mtt_params(tmp_path)).condense(train, BUDGET, make_context(series, 3))
    assert a.x.shape == (_expected_m(series), 12, 6, 1) and a.y.shape == (_expected_m(series), 12, 6, 1)
    assert a.info["experts_reused"] is False and a.info["experts_build_s"] > 0
    assert len(list(tmp_path.glob("experts-*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("the expert buffer was rebuilt")

    monkeypatch.setattr(mtt_module.trajectories, "train_experts", fail)
    b = MTT.make(_mtt_params(tmp_path)).condense(train, BUDGET, make_context(series, 3))
    assert b.info["experts_reused"] is True
    assert b.info["experts_build_s"] == b.info["reused_setup_s"] == pytest.approx(a.info["experts_build_s"])
    assert "reused_setup_s" not in a.info                 # the building run already paid inside condense
    _same(a, b)                                    # warm cache, same seed: same output
    assert isinstance(b.info["syn_lr"], float)


def test_mtt_trajectory_loss_falls(series, tmp_path):
    ctx = make_context(series, 0)
    train = series.split("train")
    method = MTT.make(_mtt_params(tmp_path, syn_steps=3))
    view, m_s = method.view(train, BUDGET, ctx)
    info = {}
    buffers = method.experts(view, 1, ctx, info)
    student = mtt_module.trajectories.FlatModel(ctx.model_factory(6, "mtgnn"))
    student.model.eval()
    x_s, y_s = (t.requires_grad_(True) for t in method.initial_set(view, 4, buffers, student, ctx, info))
    syn_lr = torch.tensor(0.01, requires_grad=True)
    traj = buffers[0]
    opt = torch.optim.Adam([x_s, y_s], lr=0.05)

    def loss():
        return method.trajectory_loss(student, traj[0], traj[2], x_s, y_s, syn_lr, view, ctx)

    start = loss().item()
    for _i in range(15):
        value = loss()
        opt.zero_grad()
        value.backward(inputs=[x_s, y_s])
        opt.step()
    assert loss().item() < 0.9 * start


def test_stemdist_mtt_is_bidimensional(series, tmp_path):
    out = STemDistMTT.make(_mtt_params(tmp_path, kmeans_iterations=20)).condense(
        series.split("train"), Compression(0.01), make_context(series, 0))
    m = round(0.1 * len(series.split("train")))
    n = round(0.1 * 6)
    assert out.x.shape == (m, 12, n, 1) and out.location_weight.shape == (n,)


# --- DATM ----------------------------------------------------------------------------------------

from baselines.distill.datm import DATM  # noqa: E402


def test_datm_range_moves_with_the_budget():
    method = DATM.make({})
    small = method.start_range(Compression(0.001), 0, 10, 16)
    large = method.start_range(Compression(0.1), 0, 10, 16)
    assert small[0] == 0 and large[0] > small[0]
    assert method.start_range(Compression(0.001), 9, 10, 16)[1] > small[1]     # upper bound grows


def test_datm_shape_soft_targets_reuse_and_determinism(series, tmp_path, monkeypatch):
    train = series.split("train")
    a = DATM.make(_mtt_params(tmp_path)).condense(train, BUDGET, make_context(series, 3))
    assert a.x.shape == (_expected_m(series), 12, 6, 1) and a.y.shape == (_expected_m(series), 12, 6, 1)
    x_real, y_real, _ = real_batch(train, np.array(a.info["init_ids"]))
    assert not torch.allclose(a.y, y_real)                 # soft targets, not the real ones
    monkeypatch.setattr(mtt_module.trajectories, "train_experts",
                        lambda *args, **kwargs: (_ for _ in ()).throw(AssertionError("rebuilt")))
    b = DATM.make(_mtt_params(tmp_path)).condense(train, BUDGET, make_context(series, 3))
    assert b.info["experts_reused"] is True
    _same(a, b)


def test_datm_soft_targets_are_expert_predictions_and_can_be_turned_off(series, tmp_path):
    train = series.split("train")
    frozen = {"lr_data": 0.0}                               # the set stays at its initialisation
    soft = DATM.make(_mtt_params(tmp_path, **frozen)).condense(train, BUDGET, make_context(series, 3))
    real = DATM.make(_mtt_params(tmp_path, soft_targets=False, **frozen)).condense(train, BUDGET,
                                                                                   make_context(series, 3))
    assert soft.info["init_ids"] == real.info["init_ids"]
    _, y_real, mask = real_batch(train, np.array(real.info["init_ids"]))
    torch.testing.assert_close(real.y, y_real.masked_fill(~mask, 0.0))
    assert not torch.allclose(soft.y, real.y)
