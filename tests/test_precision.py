"""Mixed precision of evaluation-model training (``amp``) and what stays float32."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from stbench.cli import main
from stbench.results import ResultStore
from stbench.sources import SyntheticSource
from stbench.train import TrainConfig, autocast, evaluate, train_step


class DtypeProbe(nn.Module):
    """A linear forecaster (B, L, N, C) -> (B, L, N, C) that records the dtype its matmul produced."""

    def __init__(self, length: int = 4):
        super().__init__()
        self.linear = nn.Linear(length, length)
        self.seen = []

    def forward(self, x, loc_input=None):
        out = self.linear(x.transpose(1, 3)).transpose(1, 3)
        self.seen.append(out.dtype)
        return out


def source(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, 3, 1, generator=g), torch.randn(8, 4, 3, 1, generator=g)
    return SyntheticSource(x, y, None)


@pytest.mark.parametrize("amp,dtype", [("off", torch.float32), ("bf16", torch.bfloat16)])
def test_the_training_forward_runs_in_the_chosen_precision_and_its_loss_in_float32(amp, dtype):
    model = DtypeProbe()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = train_step(model, opt, source(), np.arange(8), None, TrainConfig(amp=amp), torch.Generator())
    assert model.seen == [dtype]
    assert losses.dtype == torch.float32 and torch.isfinite(losses).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())   # the master weights stay float32


def test_bf16_training_follows_float32_training_closely_on_mtgnn():
    """Same seed, same steps: bfloat16 autocast moves the losses by well under 10% (8 mantissa bits)."""
    from stbench.models.mtgnn import MTGNNLE

    runs = {}
    for amp in ("off", "bf16"):
        torch.manual_seed(0)
        model = MTGNNLE(3, 1, 1, 4, 4, layers=1, dropout=0.0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        runs[amp] = [train_step(model, opt, source(), np.arange(8), None, TrainConfig(amp=amp),
                                torch.Generator().manual_seed(0)).mean().item() for _ in range(5)]
    assert runs["off"] != runs["bf16"]   # the precision did change
    np.testing.assert_allclose(runs["bf16"], runs["off"], rtol=0.1)


def test_validation_and_test_passes_stay_float32_after_bf16_training():
    from conftest import tiny_data
    from stbench.data.windows import Series, WindowSpec

    series = Series(tiny_data(channels=1), WindowSpec(4, 4), "cpu")
    val = series.split("val")
    model = DtypeProbe()
    train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), source(), np.arange(8), None,
               TrainConfig(amp="bf16"), torch.Generator())
    model.seen.clear()
    scores = evaluate(model, val, val.location_input(), 16)
    assert set(model.seen) == {torch.float32} and np.isfinite(scores["rmse"])


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="amp must be one of"):
        autocast("fp8", torch.device("cpu"))


def test_amp_is_recorded_and_changes_the_run_id_only_when_on(tmp_path):
    """``--amp off`` is the run as before the option existed (its run id: test_eval_protocol's GOLDEN)."""
    args = ["run", "--methods", "random", "--dataset", "synthetic-traffic", "--size", "locations=6,steps=240",
            "--budgets", "0.1", "--epochs", "1", "--model", "mlp", "--quiet"]
    assert main([*args, "--results", str(tmp_path / "a")]) == 0
    assert main([*args, "--results", str(tmp_path / "a"), "--amp", "off"]) == 0   # the same cell: skipped
    assert main([*args, "--results", str(tmp_path / "a"), "--amp", "bf16"]) == 0
    records = ResultStore(tmp_path / "a").records()
    assert len(records) == 2 and len({r["run_id"] for r in records}) == 2
    configs = [json.loads(r["train_config"]) if isinstance(r["train_config"], str) else r["train_config"]
               for r in records]
    assert sorted(c.get("amp", "off") for c in configs) == ["bf16", "off"]
