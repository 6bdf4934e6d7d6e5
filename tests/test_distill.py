"""General dataset-distillation baselines: budget shapes, falling objectives, determinism, expert caches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.distill.dc import DC
from baselines.distill.mtt import RealView
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
    view = RealView(train)                      # all real locations: no location input, no weights
    start = method.matching_distance(model, params, real, x_s, y_s, view).item()
    for _i in range(30):
        dist = method.matching_distance(model, params, real, x_s, y_s, view)
        opt.zero_grad()
        dist.backward(inputs=[x_s, y_s])
        opt.step()
    end = method.matching_distance(model, params, real, x_s, y_s, view).item()
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


def _datm_initial_set(series, tmp_path, **params):
    """DATM's initial synthetic set (before any distillation step) and its info."""
    ctx = make_context(series, 3)
    train = series.split("train")
    method = DATM.make(_mtt_params(tmp_path, **params))
    view, m_s = method.view(train, BUDGET, ctx)
    info = {}
    buffers = method.experts(view, 1, ctx, info)
    student = mtt_module.trajectories.FlatModel(ctx.model_factory(6, "mtgnn"))
    student.model.eval()
    x, y = method.initial_set(view, m_s, buffers, student, ctx, info)
    return x, y, info


def test_datm_soft_targets_are_expert_predictions_and_can_be_turned_off(series, tmp_path):
    train = series.split("train")
    _, soft_y, soft = _datm_initial_set(series, tmp_path)
    _, real_y, real = _datm_initial_set(series, tmp_path, soft_targets=False)
    assert soft["init_ids"] == real["init_ids"]
    _, y_real, mask = real_batch(train, np.array(real["init_ids"]))
    torch.testing.assert_close(real_y, y_real.masked_fill(~mask, 0.0))
    assert not torch.allclose(soft_y, real_y)


# --- expert cache: key, safety, validation ---------------------------------------------------------

import dataclasses  # noqa: E402

from baselines.distill import trajectories  # noqa: E402
from stbench.safe_io import load_plain, save_plain  # noqa: E402


def _expert_path(method, series, ctx, tmp_path):
    view, _ = method.view(series.split("train"), BUDGET, ctx)
    return trajectories.cache_path(str(tmp_path), method.expert_key(view, ctx))


def test_mtt_expert_key_depends_on_the_device(series, tmp_path):
    method = MTT.make(_mtt_params(tmp_path))
    cpu = make_context(series, 3)
    cuda = dataclasses.replace(cpu, device=torch.device("cuda"))   # the key only, nothing runs there
    view, _ = method.view(series.split("train"), BUDGET, cpu)
    assert method.expert_key(view, cpu)["device"] == "cpu" and method.expert_key(view, cuda)["device"] == "cuda"
    assert _expert_path(method, series, cpu, tmp_path) != _expert_path(method, series, cuda, tmp_path)


class _Exploit:
    """Unpickling this (``weights_only=False``) opens ``path`` for writing: a stand-in for any code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


CHEAP_EXPERTS = {"expert_train_epochs": 1, "expert_epochs": 1, "iterations": 1, "syn_steps": 1}


def test_a_crafted_expert_cache_never_runs_and_is_rebuilt(series, tmp_path, capsys):
    train = series.split("train")
    method = MTT.make(_mtt_params(tmp_path, **CHEAP_EXPERTS))
    path = _expert_path(method, series, make_context(series, 3), tmp_path)
    marker = tmp_path / "pwned"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"trajectories": _Exploit(marker), "build_s": 1.0}, path)
    torch.load(path, weights_only=False)                   # the file really is an exploit ...
    assert marker.exists()
    marker.unlink()
    out = method.condense(train, BUDGET, make_context(series, 3))
    assert not marker.exists()                            # ... that the cache never runs
    assert out.info["experts_reused"] is False and "ignoring unreadable cache file" in capsys.readouterr().err
    assert trajectories.valid_buffers(load_plain(path), 1, 2) == ""   # rebuilt in place, as plain data
    again = method.condense(train, BUDGET, make_context(series, 3))
    assert again.info["experts_reused"] is True           # and reused from then on, with the same result
    _same(out, again)


@pytest.mark.parametrize("garbage", [
    {"trajectories": 3},
    {"trajectories": [[torch.zeros(2, 3)] * 2], "build_s": 1.0},             # 2-D snapshots
    {"trajectories": [[torch.zeros(5)] * 2], "build_s": 1.0},                # wrong parameter count
    {"trajectories": [[torch.zeros(5)] * 3], "build_s": 1.0},                # wrong trajectory length
], ids=["int", "2d", "params", "length"])
def test_a_garbage_but_loadable_expert_cache_is_rebuilt(series, tmp_path, capsys, garbage):
    method = MTT.make(_mtt_params(tmp_path, **CHEAP_EXPERTS))
    path = _expert_path(method, series, make_context(series, 3), tmp_path)
    save_plain(path, garbage)
    out = method.condense(series.split("train"), BUDGET, make_context(series, 3))
    assert out.info["experts_reused"] is False and "invalid expert cache" in capsys.readouterr().err
    assert trajectories.valid_buffers(load_plain(path), 1, 2) == ""


def test_expert_cache_validation_names_the_problem():
    good = {"trajectories": [[torch.zeros(4), torch.ones(4)]], "build_s": 0.5}
    assert trajectories.valid_buffers(good, 1, 2, 4) == ""
    assert "no list" in trajectories.valid_buffers({"trajectories": 3})
    assert "build time" in trajectories.valid_buffers({**good, "build_s": float("nan")})
    assert "2 trajectories" in trajectories.valid_buffers({**good, "trajectories": good["trajectories"] * 2}, 1)
    assert "parameters" in trajectories.valid_buffers(good, 1, 2, 5)
    bad = {**good, "trajectories": [[torch.zeros(4), torch.full((4,), float("inf"))]]}
    assert "non-finite" in trajectories.valid_buffers(bad)


# --- parameters: only stemdist-mtt clusters; ranges; data-dependent limits -------------------------

from stbench import UserError  # noqa: E402
from stbench.cli import main  # noqa: E402
from stbench.runner import make_method  # noqa: E402


@pytest.mark.parametrize("name", ["mtt", "datm"])
@pytest.mark.parametrize("param", ["clustering", "kmeans_iterations"])
def test_only_stemdist_mtt_takes_clustering_parameters(name, param):
    value = {"clustering": False, "kmeans_iterations": 5}[param]
    with pytest.raises(UserError, match=f"has no parameter {param!r}"):
        make_method(name, {f"{name}.{param}": value})
    assert param not in make_method(name, {}).param_dict()
    assert make_method("stemdist-mtt", {f"stemdist-mtt.{param}": value}).param_dict()[param] == value


@pytest.mark.parametrize("cls, params, message", [
    (DC, {"lr_data": -1}, "lr_data must be > 0 (got -1)"),
    (DC, {"outer_iterations": -2}, "outer_iterations must be >= 0 (got -2)"),
    (DM, {"label_mode": "soft"}, "label_mode must be one of teacher, learned (got 'soft')"),
    (DM, {"teacher_lr": 0.0}, "teacher_lr must be > 0 (got 0.0)"),
    (IDM, {"queue_init": 0}, "queue_init must be >= 1 (got 0)"),
    (IDM, {"queue_init": 4, "queue_size": 3}, "queue_size must be >= 4 (got 3)"),
    (IDM, {"lr_real": -1e-3}, "lr_real must be > 0 (got -0.001)"),
    (FRePo, {"pool_size": 0}, "pool_size must be >= 1 (got 0)"),
    (FRePo, {"krr_lambda": 0.0}, "krr_lambda must be > 0 (got 0.0)"),
    (MTT, {"syn_steps": 0}, "syn_steps must be >= 1 (got 0)"),
    (MTT, {"expert_seed": -2}, "expert_seed must be >= -1 (got -2)"),
    (MTT, {"expert_train_epochs": 3, "expert_epochs": 4}, "expert_epochs must be <= expert_train_epochs (3)"),
    (MTT, {"lr_teacher": float("nan")}, "lr_teacher must be > 0 (got nan)"),
    (DATM, {"init_quantile": 1.5}, "init_quantile must be in (0, 1] (got 1.5)"),
    (DATM, {"ratio_low": 0.1, "ratio_high": 0.01}, "ratio_high must be > ratio_low (0.1)"),
    (DATM, {"lr_data": 0.0}, "lr_data must be > 0 (got 0.0)"),             # inherited from MTT
    (STemDistMTT, {"kmeans_iterations": 0}, "kmeans_iterations must be >= 1 (got 0)"),
])
def test_out_of_range_parameters_are_refused_on_construction(cls, params, message):
    with pytest.raises(ValueError) as err:
        cls.make(params)
    assert str(err.value).startswith(message)


def test_every_default_and_preset_sentinel_is_accepted():
    for cls in (DC, DM, IDM, FRePo, MTT, DATM, STemDistMTT):
        cls.make({})
    MTT.make({"lr_lr": 0.0, "syn_lr_init": 0.0, "expert_seed": -1})         # fixed student lr; run-seeded experts


@pytest.mark.parametrize("cls, param", [(DC, "batch_size"), (DM, "batch_size"), (IDM, "batch_size"),
                                        (FRePo, "batch_size"), (MTT, "expert_batch"), (DATM, "expert_batch")])
def test_a_batch_larger_than_the_training_windows_is_refused_before_any_compute(cls, param):
    cls.make({param: 100}).check(100, 6)
    cls.make({}).check(10, 6)                                               # 0: the default, clipped to the data
    with pytest.raises(ValueError, match=f"{param} 101 exceeds the 100 training windows"):
        cls.make({param: 101}).check(100, 6)


@pytest.mark.parametrize("setting, message", [
    ("dc.lr_data=-1", "stbench: error: method dc: lr_data must be > 0 (got -1.0)"),
    ("dm.batch_size=100000", "stbench: error: method dm: batch_size 100000 exceeds the"),
])
def test_bad_parameters_stop_the_cli_with_one_line(tmp_path, capsys, setting, message):
    method = setting.split(".")[0]
    code = main(["run", "--methods", method, "--dataset", "synthetic-traffic", "--size", "locations=6,steps=300",
                 "--set", setting, "--quiet", "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.splitlines()[-1].startswith(message)
    assert not (tmp_path / "res" / "runs.jsonl").exists() or (tmp_path / "res" / "runs.jsonl").read_text() == ""


# --- fidelity notes: reference flags, IDM's lr_real ------------------------------------------------

def test_dc_and_frepo_learning_rates_name_the_reference_flags_they_correspond_to():
    from baselines.distill import dc, frepo
    for module in (dc, frepo):
        doc = " ".join(module.__doc__.split())
        assert "``lr_data`` is" in doc or "is our ``lr_data``" in doc, module.__name__
        assert "-lrf`` (``lr_feat``" in doc and "-lrs`` (``lr_syn``" in doc, module.__name__
    assert "reference -lrs 1e-2" not in dc.__doc__ and "-lrf 1e-3 -lrs 1e-2" in " ".join(dc.__doc__.split())


def test_idm_queue_models_train_at_the_reference_lr_real(series):
    method = IDM.make({"iterations": 1, "teacher_epochs": 1, "train_steps": 1, "queue_init": 2, "queue_size": 3})
    assert method.params.lr_real == 1e-2                                    # the reference's -lrr 1e-2
    method.condense(series.split("train"), BUDGET, make_context(series, 0))
    assert all(opt.param_groups[0]["lr"] == 1e-2 for _, opt in method.queue)


# --- stemdist-mtt: cluster weights in every objective ---------------------------------------------

def _clustered_mtt(tmp_path, series, **extra):
    ctx = make_context(series, 0)
    method = STemDistMTT.make(_mtt_params(tmp_path, kmeans_iterations=20, expert_train_epochs=1,
                                          expert_epochs=1, **extra))
    view, m_s = method.view(series.split("train"), Compression(0.05), ctx)
    return method, view, m_s, ctx


def test_stemdist_mtt_student_and_expert_losses_use_the_cluster_weights(series, tmp_path):
    method, view, m_s, ctx = _clustered_mtt(tmp_path, series)
    n, clusters = view.n, view.location_weight
    assert n >= 2 and clusters.shape == (n,)
    skewed = torch.linspace(1.0, 5.0, n)
    uniform = torch.full((n,), 1.0 / n)

    # the student's loss: location i's squared error counts w_i / mean(w) times
    pred, y = torch.randn(3, 12, n, 1), torch.randn(3, 12, n, 1)
    w = (skewed / skewed.mean()).view(1, 1, n, 1)
    torch.testing.assert_close(method.student_loss(pred, y, skewed), ((pred - y) ** 2 * w).mean())
    torch.testing.assert_close(method.student_loss(pred, y, uniform), ((pred - y) ** 2).mean())

    # ... inside the trajectory loss
    student = trajectories.FlatModel(ctx.model_factory(n, "mtgnn-le"))
    student.model.eval()
    theta0 = student.flat()
    target = theta0 + 0.01 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(0))
    x_s, y_s = method.initial_set(view, 3, None, student, ctx, {})

    def loss(weights):
        view.location_weight = weights
        return method.trajectory_loss(student, theta0, target, x_s, y_s, torch.tensor(0.01), view,
                                      make_context(series, 0)).item()
    assert loss(skewed) != pytest.approx(loss(uniform), rel=1e-6)

    # ... and in the experts' training
    def expert(weights):
        view.location_weight = weights
        return method.build_experts(view, 1, ctx)[0][-1]
    assert not torch.allclose(expert(skewed), expert(uniform))
    torch.testing.assert_close(expert(uniform), expert(None))               # unit weights change nothing
    view.location_weight = clusters
    assert method.expert_key(view, ctx)["loss"] == "location-weighted mse"
    assert MTT.make({}).expert_key(mtt_module.RealView(series.split("train")), ctx)["loss"] == "mse"


def test_weighted_masked_mse_leaves_unobserved_entries_out():
    pred, y = torch.zeros(1, 2, 3, 1), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).view(1, 2, 3, 1)
    mask = torch.tensor([True, True, False, True, True, True]).view(1, 2, 3, 1)
    w = torch.tensor([1.0, 2.0, 3.0])                                      # mean 2: factors 0.5, 1, 1.5
    expected = (0.5 * 1 + 1 * 4 + 0.5 * 16 + 1 * 25 + 1.5 * 36) / 5
    assert trajectories.weighted_masked_mse(pred, y, mask, w).item() == pytest.approx(expected)
