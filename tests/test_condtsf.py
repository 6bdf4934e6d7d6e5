"""DLinear and the CondTSF plugin (issue 29): the value-term update, its schedule, the backbones it
wraps, and a run through the real runner."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines.distill import dc as dc_module
from baselines.distill import dm as dm_module
from baselines.distill import mtt as mtt_module
from baselines.timeseries import condtsf as condtsf_module
from baselines.timeseries.condtsf import CondTSF, FrozenExperts, ValuePlugin, relabel
from stbench.budgets import Compression
from stbench.data.windows import Series, WindowSpec
from stbench.models.dlinear import DLinear, moving_average_matrix
from stbench.plugins import load_builtin
from stbench.registry import METHODS, MODELS
from stbench.runner import Grid, Runner

from conftest import make_context, tiny_data

load_builtin()
BUDGET = Compression(0.05)


@pytest.fixture(scope="module")
def series():
    return Series(tiny_data(steps=300, locations=6, channels=1), WindowSpec(12, 12))


def _expert(n=6, c_in=1, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return DLinear(n, c_in, 1).to(dtype).eval()


def _synthetic(m=5, n=6, c=1, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, 12, n, c, generator=g, dtype=dtype).requires_grad_(True)
    y = torch.randn(m, 12, n, 1, generator=g, dtype=dtype).requires_grad_(True)
    return x, y


def _forecast(model):
    def forecast(x):
        with torch.no_grad():
            return model(x)
    return forecast


# --- the plugin update ---------------------------------------------------------------------------

@pytest.mark.parametrize("beta", [0.01, 0.3, 0.77])
def test_k_plugin_steps_shrink_the_label_error_by_one_minus_beta_to_the_k(beta):
    expert = _expert()
    x_s, y_s = _synthetic()
    target = expert(x_s).detach()
    start = y_s.detach() - target
    plugin = ValuePlugin(beta, 1, "replace", _forecast(expert))
    for k in range(1, 6):
        plugin.step(x_s, y_s)
        gap = y_s.detach() - target
        torch.testing.assert_close(gap, (1 - beta) ** k * start, rtol=1e-10, atol=1e-12)
        assert gap.norm().item() == pytest.approx((1 - beta) ** k * start.norm().item(), rel=1e-10)
    # the recorded label error (RMSE before each step) falls by the same factor
    ratios = np.array(plugin.label_error[1:]) / np.array(plugin.label_error[:-1])
    np.testing.assert_allclose(ratios, 1 - beta, rtol=1e-9)


def test_beta_zero_is_the_identity_and_beta_one_is_the_expert_forecast():
    expert = _expert(dtype=torch.float32)
    x_s, y_s = _synthetic(dtype=torch.float32)
    forecast = expert(x_s).detach()
    assert torch.equal(relabel(y_s, forecast, 0.0), y_s.detach())
    assert torch.equal(relabel(y_s, forecast, 1.0), forecast)
    before = y_s.detach().clone()
    ValuePlugin(0.0, 1, "replace", _forecast(expert)).step(x_s, y_s)
    assert torch.equal(y_s.detach(), before)
    ValuePlugin(1.0, 1, "replace", _forecast(expert)).step(x_s, y_s)
    assert torch.equal(y_s.detach(), forecast)


def test_a_plugin_step_leaves_the_inputs_bit_identical_and_builds_no_graph():
    expert = _expert(dtype=torch.float32)
    expert.train()
    buffers = [[mtt_module.trajectories.FlatModel(expert).flat()] * 2]
    experts = FrozenExperts(buffers, expert, np.random.default_rng(0))
    x_s, y_s = _synthetic(dtype=torch.float32)
    x_before, y_before = x_s.detach().clone(), y_s.detach().clone()
    forecast = experts(x_s)
    assert not forecast.requires_grad and forecast.grad_fn is None
    assert not experts.flat.model.training                    # the expert forecasts in evaluation mode
    update = relabel(y_s, forecast, 0.5)
    assert not update.requires_grad and update.grad_fn is None
    ValuePlugin(0.5, 1, "replace", experts).step(x_s, y_s)
    assert torch.equal(x_s.detach(), x_before) and x_s.grad is None
    assert y_s.is_leaf and y_s.grad_fn is None and y_s.requires_grad     # still the optimiser's leaf
    assert not torch.equal(y_s.detach(), y_before)
    torch.testing.assert_close(y_s.detach(), 0.5 * y_before + 0.5 * expert(x_before).detach())
    (y_s ** 2).sum().backward()                                # and still usable by the backbone
    assert x_s.grad is None and y_s.grad is not None


def test_the_plugin_is_due_every_period_th_iteration_and_replaces_or_adds_to_the_base_step():
    for mode, runs in (("replace", False), ("add", True)):
        plugin = ValuePlugin(0.1, 3, mode, lambda x: torch.zeros(x.shape[0], 12, x.shape[2], 1))
        x_s, y_s = torch.zeros(2, 12, 3, 1), torch.ones(2, 12, 3, 1)
        base_runs = [it for it in range(10) if plugin(it, x_s, y_s)]
        assert plugin.iterations == [2, 5, 8]
        assert base_runs == ([0, 1, 3, 4, 6, 7, 9] if not runs else list(range(10)))
    assert ValuePlugin(0.1, 1, "replace").due(0)
    assert not any(ValuePlugin(0.1, 11, "replace").due(it) for it in range(10))   # period > iterations: off


# --- the plugin inside its backbones -------------------------------------------------------------

def _params(tmp_path, **extra):
    return {"iterations": 10, "num_experts": 2, "expert_train_epochs": 3, "expert_epochs": 1, "syn_steps": 2,
            "max_start_epoch": 1, "distill_iterations": 1, "model_epochs": 1, "cache_dir": str(tmp_path), **extra}


# the backbone's own per-iteration update, and how often one iteration calls it
BASE_STEP = {"mtt": (mtt_module.MTT, "trajectory_loss", 1), "dc": (dc_module.DC, "matching_distance", 1),
             "dm": (dm_module.DM, "iteration", 1)}


@pytest.mark.parametrize("base", ["mtt", "dc", "dm"])
@pytest.mark.parametrize("mode", ["replace", "add"])
def test_the_plugin_fires_on_its_scheduled_iterations_inside_each_backbone(series, tmp_path, monkeypatch, base,
                                                                           mode):
    cls, name, per_iteration = BASE_STEP[base]
    calls, steps = [], []
    original, original_step = getattr(cls, name), ValuePlugin.step

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    def counted_step(self, x_s, y_s):
        steps.append(1)
        return original_step(self, x_s, y_s)

    monkeypatch.setattr(cls, name, counted)
    monkeypatch.setattr(ValuePlugin, "step", counted_step)
    out = CondTSF.make(_params(tmp_path, base=base, mode=mode, period=3)).condense(
        series.split("train"), BUDGET, make_context(series, 0))
    assert len(steps) == 3 and out.info["plugin_iterations"] == [2, 5, 8] and out.info["plugin_steps"] == 3
    assert len(calls) == (7 if mode == "replace" else 10) * per_iteration
    assert out.info["beta"] == out.info["effective_beta"] == 0.01 and out.info["base"] == base
    assert len(out.info["label_error"]) == 3


def test_without_a_due_plugin_condtsf_is_its_backbone_exactly(series, tmp_path):
    """Composition, not a copy: the backbone's own step produces the set; the plugin only adds to it."""
    train = series.split("train")
    params = _params(tmp_path, iterations=4, period=5)
    plain = mtt_module.MTT.make({k: v for k, v in params.items() if k in {
        "iterations", "num_experts", "expert_train_epochs", "expert_epochs", "syn_steps", "max_start_epoch",
        "cache_dir"}} | {"model": "dlinear"}).condense(train, BUDGET, make_context(series, 3))
    wrapped = CondTSF.make(params).condense(train, BUDGET, make_context(series, 3))
    assert wrapped.info["plugin_steps"] == 0
    assert torch.equal(plain.x, wrapped.x) and torch.equal(plain.y, wrapped.y)
    # with the plugin due, the targets move and the inputs of an MTT step are the backbone's
    fired = CondTSF.make(_params(tmp_path, iterations=4, period=2)).condense(train, BUDGET, make_context(series, 3))
    assert fired.info["plugin_steps"] == 2 and not torch.equal(fired.y, plain.y)


@pytest.mark.parametrize("base", ["dc", "dm"])
def test_dc_and_dm_backbones_reuse_the_cached_experts_and_charge_their_cost(series, tmp_path, monkeypatch, base):
    train = series.split("train")
    first = CondTSF.make(_params(tmp_path, base=base, iterations=3)).condense(train, BUDGET, make_context(series, 0))
    assert first.info["experts_reused"] is False and first.info["experts_build_s"] > 0
    assert "reused_setup_s" not in first.info                 # built inside condense: the meter counted it
    monkeypatch.setattr(mtt_module.trajectories, "train_experts",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = CondTSF.make(_params(tmp_path, base=base, iterations=3)).condense(train, BUDGET, make_context(series, 0))
    assert again.info["experts_reused"] is True
    assert again.info["reused_setup_s"] == pytest.approx(first.info["experts_build_s"])
    assert torch.equal(first.x, again.x) and torch.equal(first.y, again.y)


def test_the_dm_backbone_learns_the_targets_the_plugin_moves():
    method = CondTSF.make({"base": "dm"})
    assert method.backbone().params.label_mode == "learned"


@pytest.mark.parametrize("params, message", [
    ({"beta": 1.5}, "beta must be in [0, 1] (got 1.5)"),
    ({"beta": -0.1}, "beta must be in [0, 1]"),
    ({"period": 0}, "period must be >= 1 (got 0)"),
    ({"base": "kip"}, "base must be one of mtt, dc, dm (got 'kip')"),
    ({"mode": "both"}, "mode must be one of replace, add (got 'both')"),
    ({"syn_steps": 0}, "syn_steps must be >= 1 (got 0)"),                  # the backbone's own checks
    ({"base": "dc", "lr_model": 0.0}, "lr_model must be > 0 (got 0.0)"),
])
def test_out_of_range_parameters_are_refused_on_construction(params, message):
    with pytest.raises(ValueError) as err:
        CondTSF.make(params)
    assert str(err.value).startswith(message)


def test_registration_and_label_source():
    entry = METHODS.entry("condtsf")
    assert entry.obj is CondTSF and entry.family == "timeseries"
    assert CondTSF.make({}).label_source() == "expert-relabelled" and not CondTSF.make({}).is_bidimensional(BUDGET)
    assert CondTSF.make({}).params.model == "dlinear" and CondTSF.make({}).params.base == "mtt"
    with pytest.raises(ValueError, match="batch_size 999 exceeds"):
        CondTSF.make({"batch_size": 999}).check(100, 6)


# --- through the runner ----------------------------------------------------------------------------

def _run(results, model="auto", **params):
    shrink = {"iterations": 3, "num_experts": 1, "expert_train_epochs": 2, "expert_epochs": 1, "syn_steps": 2,
              "max_start_epoch": 1, "distill_iterations": 1, "model_epochs": 1, "batch_size": 16, **params}
    grid = Grid(methods="condtsf", dataset="synthetic-traffic", dataset_options={"locations": 8, "steps": 300},
                budgets=[BUDGET], seeds=[0], model=model, preset="smoke", device="cpu", results=results,
                params={f"condtsf.{k}": v for k, v in shrink.items()}, train_overrides={"epochs": 1})
    (record,) = Runner(grid).run()
    assert record["status"] == "ok", (record.get("error"), record.get("traceback"))
    return record


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_condtsf_through_the_runner_meets_the_budget_deterministically_and_records_its_cost(
        tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))
    first = _run(str(tmp_path / "a"))
    second = _run(str(tmp_path / "b"))                        # a fresh store; only the experts are reused
    n_train, n_loc = first["split_windows"]["train"], first["dataset_shape"][1]
    m, n = BUDGET.sizes(n_train, n_loc, False)
    assert first["reduced_shape"][0] == m and first["reduced_shape"][2] == n == n_loc
    assert first["budget_achieved"] == m / n_train
    assert second["metrics"]["test"] == first["metrics"]["test"]
    assert first["label_source"] == second["label_source"] == "expert-relabelled"
    assert first["model"] == "mtgnn" and first["family"] == "timeseries"
    info = first["condense_info"]
    assert info["plugin_steps"] == 1 and info["plugin_iterations"] == [2] and info["beta"] == 0.01
    assert info["experts_reused"] is False and second["condense_info"]["experts_reused"] is True
    assert first["time_s"]["condense"] > 0
    assert second["time_s"]["condense"] >= second["condense_info"]["reused_setup_s"] > 0   # charged


@pytest.mark.parametrize("base, model", [("dc", "dlinear"), ("dm", "auto")])
def test_condtsf_dc_and_dm_run_through_the_runner(tmp_path, monkeypatch, one_thread, base, model):
    monkeypatch.setenv("STBENCH_CACHE", str(tmp_path / "cache"))
    record = _run(str(tmp_path / "r"), model=model, base=base)
    assert record["label_source"] == "expert-relabelled" and record["condense_info"]["base"] == base
    assert record["condense_info"]["plugin_steps"] == 1 and record["time_s"]["condense"] > 0
    assert record["model"] == ("dlinear" if model == "dlinear" else "mtgnn")
    assert np.isfinite(record["metrics"]["test"]["rel_rmse"])


# --- DLinear ----------------------------------------------------------------------------------------

class OriginalDLinear(nn.Module):
    """LTSF-Linear's DLinear (individual=False) as CondTSF's ``model/arch/dlinear.py`` writes it."""

    def __init__(self, seq_len, pred_len, kernel_size=25):
        super().__init__()
        self.k = kernel_size
        self.avg = nn.AvgPool1d(kernel_size=kernel_size, stride=1, padding=0)
        self.Linear_Seasonal = nn.Linear(seq_len, pred_len)
        self.Linear_Trend = nn.Linear(seq_len, pred_len)

    def trend(self, x):                       # x: (B, L, channels)
        front = x[:, 0:1, :].repeat(1, (self.k - 1) // 2, 1)
        end = x[:, -1:, :].repeat(1, (self.k - 1) // 2, 1)
        return self.avg(torch.cat([front, x, end], dim=1).permute(0, 2, 1)).permute(0, 2, 1)

    def forward(self, x):
        trend = self.trend(x)
        seasonal = (x - trend).permute(0, 2, 1)
        return (self.Linear_Seasonal(seasonal) + self.Linear_Trend(trend.permute(0, 2, 1))).permute(0, 2, 1)


@pytest.mark.parametrize("length, kernel, clamp", [(24, 25, False), (12, 25, False), (12, 11, True), (30, 7, True)])
def test_dlinear_equals_the_original_with_the_same_weights(length, kernel, clamp):
    ours = DLinear(5, 1, 1, length, length, kernel_size=kernel, clamp_kernel=clamp).double()
    ref = OriginalDLinear(length, length, kernel).double()
    ref.Linear_Trend.load_state_dict(ours.linear_trend.state_dict())
    ref.Linear_Seasonal.load_state_dict(ours.linear_remainder.state_dict())
    x = torch.randn(3, length, 5, 1, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[..., 0], ref(x[..., 0]))


def test_dlinear_decomposition_reconstructs_the_input_and_clamps_the_kernel():
    model = DLinear(4, 2, 1, 12, 12)
    assert model.kernel_size == 12 and DLinear(4, 1, 1, 36, 12).kernel_size == 25
    x = torch.randn(3, 4, 2, 12, dtype=torch.float64)
    trend, remainder = model.double().decompose(x)
    torch.testing.assert_close(trend + remainder, x, rtol=0, atol=1e-14)
    const, _ = model.decompose(torch.full((1, 1, 1, 12), 3.0, dtype=torch.float64))
    torch.testing.assert_close(const, torch.full_like(const, 3.0))           # a constant is its own trend
    a = moving_average_matrix(12, 12)
    torch.testing.assert_close(a.sum(dim=1), torch.ones(12, dtype=torch.float64))   # an average per row


def test_dlinear_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())   # noqa: E731
    assert count(DLinear(7, 1, 1, 12, 12)) == 2 * (12 * 12 + 12) == 312 == count(DLinear(300, 1, 1, 12, 12))
    assert count(DLinear(7, 1, 1, 24, 24)) == 1200                            # CondTSF's 24 / 24
    assert count(DLinear(7, 3, 1, 12, 12)) == 312 + 3 * 1 + 1                 # the channel head
    assert MODELS.get("dlinear") is DLinear and MODELS.get("dlinear").inductive
    assert MODELS.entry("dlinear").family == "linear"


def test_dlinear_channel_head_starts_as_dlinear_on_the_target_channel():
    model = DLinear(5, 3, 1)
    x = torch.randn(2, 12, 5, 3)
    alone = DLinear(5, 1, 1)
    alone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head.")})
    torch.testing.assert_close(model(x), alone(x[..., :1]))
    assert model(x).shape == (2, 12, 5, 1)


def test_dlinear_is_channel_independent_across_locations():
    torch.manual_seed(0)
    model = DLinear(6, 2, 1).eval()
    x = torch.randn(3, 12, 6, 2)
    out = model(x)
    perm = torch.randperm(6)
    torch.testing.assert_close(model(x[:, :, perm]), out[:, :, perm])
    changed = x.clone()
    changed[:, :, 2] += torch.randn(3, 12, 2)
    moved = model(changed)
    keep = [i for i in range(6) if i != 2]
    assert torch.equal(moved[:, :, keep], out[:, :, keep]) and not torch.allclose(moved[:, :, 2], out[:, :, 2])


def test_dlinear_trains_on_fewer_locations_and_predicts_on_all():
    torch.manual_seed(0)
    model = DLinear(20, 1, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(4, 12, 6, 1), torch.randn(4, 12, 6, 1)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    with torch.no_grad():
        out = model(torch.randn(3, 12, 20, 1), torch.randn(20, 12, 1))
    assert out.shape == (3, 12, 20, 1) and torch.isfinite(out).all()


def test_dlinear_has_a_double_backward_for_trajectory_matching():
    model = DLinear(4, 1, 1).twice_differentiable()
    flat = mtt_module.trajectories.FlatModel(model)
    theta = flat.flat().requires_grad_(True)
    x = torch.randn(2, 12, 4, 1, requires_grad=True)
    loss = flat(theta, x, None).pow(2).mean()
    (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
    (grad.pow(2).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_module_reuses_the_backbones_rather_than_copying_them():
    assert issubclass(condtsf_module._MTT, mtt_module.MTT) and issubclass(condtsf_module._DC, dc_module.DC)
    assert issubclass(condtsf_module._DM, dm_module.DM)
    for cls in (mtt_module.MTT, dc_module.DC, dm_module.DM):   # the backbones' hook is a no-op by default
        assert cls.before_iteration(None, 0, None, None, None) is True
