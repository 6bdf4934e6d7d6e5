"""Validation and test batches sized to a memory budget (``--eval-memory``, ``stbench.eval_batch``)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from stbench.cli import main
from stbench.eval_batch import budget_batch, forward_peak_bytes
from stbench.results import ResultStore

WIDTH = 1000   # the probe model's activation: (B, L, N, WIDTH) float32


class Widening(nn.Module):
    """(B, L, N, 1) -> (B, L, N, 1) through one (B, L, N, WIDTH) activation: known bytes per window."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(WIDTH))
        self.drop = nn.Dropout(0.5)

    def forward(self, x, loc_input=None):
        wide = self.drop(x * self.scale)        # (B, L, N, WIDTH), the one large tensor
        return wide.mean(dim=-1, keepdim=True)


def window_set(num_locations=3, length=4):
    from conftest import tiny_data
    from stbench.data.windows import Series, WindowSpec

    return Series(tiny_data(locations=num_locations, channels=1), WindowSpec(length, length), "cpu").split("val")


def test_the_peak_is_the_activation_bytes_and_grows_with_the_batch():
    model, x = Widening(), torch.randn(8, 4, 3, 1)
    per_window = 4 * 3 * WIDTH * 4   # L x N x WIDTH float32
    peaks = {b: forward_peak_bytes(model, x[:b], None) for b in (1, 2, 8)}
    for b, peak in peaks.items():
        assert b * per_window <= peak <= b * per_window * 1.05 + 4096
    assert peaks[8] - peaks[1] == pytest.approx(7 * per_window, rel=0.02)


def test_the_budgeted_batch_is_the_largest_that_fits():
    windows = window_set()
    model = Widening()
    budget_mb = 0.5
    batch = budget_batch(model, windows, None, budget_mb)
    assert 1 < batch < len(windows)
    peak = lambda b: forward_peak_bytes(model, windows.batch(np.arange(b)).x, None)   # noqa: E731
    assert peak(batch) <= budget_mb * 2**20 < peak(batch + 1)


def test_a_budget_beyond_the_split_takes_the_whole_split_and_a_tiny_one_a_single_window():
    windows, model = window_set(), Widening()
    assert budget_batch(model, windows, None, 1e6) == len(windows)
    assert budget_batch(model, windows, None, 1e-6) == 1


def test_the_probe_draws_nothing_and_leaves_the_model_in_its_mode():
    windows, model = window_set(), Widening().train()
    state = torch.get_rng_state()
    budget_batch(model, windows, None, 0.5)
    assert model.training and torch.equal(state, torch.get_rng_state())


RUN = ["run", "--methods", "random", "--dataset", "synthetic-traffic", "--size", "locations=6,steps=240",
       "--budgets", "0.1", "--epochs", "2", "--model", "mtgnn", "--quiet"]


def test_a_memory_budget_regroups_the_evaluation_windows_without_changing_the_metrics(tmp_path):
    assert main([*RUN, "--results", str(tmp_path)]) == 0
    assert main([*RUN, "--results", str(tmp_path), "--eval-memory", "0.2"]) == 0
    fixed, budgeted = ResultStore(tmp_path).records()
    assert fixed["run_id"] != budgeted["run_id"]
    config = budgeted["train_config"] if isinstance(budgeted["train_config"], dict) else json.loads(budgeted["train_config"])
    assert config["eval_memory_mb"] == 0.2 and fixed["train_config"]["eval_memory_mb"] == 0.0
    assert fixed["protocol"]["eval_batch"] == 64 and budgeted["protocol"]["eval_batch"] < 64
    for record in (fixed, budgeted):
        assert record["protocol"]["test_batches_dropped"] == 0
        assert record["protocol"]["test_windows"] == fixed["split_windows"]["test"]
    for key in ("mae", "rmse", "rel_rmse"):   # the same windows, grouped otherwise: float rounding only
        assert budgeted["metrics"]["test"][key] == pytest.approx(fixed["metrics"]["test"][key], rel=1e-5)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_budget_that_is_not_positive_is_refused_before_any_compute(tmp_path, value, capsys):
    assert main([*RUN, "--results", str(tmp_path), "--eval-memory", value]) == 2
    assert "--eval-memory must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "runs.jsonl").exists()
