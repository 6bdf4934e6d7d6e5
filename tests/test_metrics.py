import math

import numpy as np
import torch

from stbench.metrics import StreamingMetrics


def numpy_reference(pred, y, mask):
    """Independent computation of the STemDist metric definitions, pooled over everything."""
    p, t = pred[mask], y[mask]
    y_bar = t.mean()
    return {
        "mae": np.abs(p - t).mean(),
        "rmse": np.sqrt(((p - t) ** 2).mean()),
        "mape": 100 * (np.abs(p - t) / np.abs(t)).mean(),
        "rel_mae": np.abs(p - t).sum() / np.abs(t - y_bar).sum(),
        "rel_rmse": np.sqrt(((p - t) ** 2).sum() / ((t - y_bar) ** 2).sum()),
    }, y_bar


def test_streaming_metrics_match_numpy_with_masks():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 10, size=(37, 12, 5, 1))
    y[rng.random(y.shape) < 0.1] = 0.0          # zeros are "no reading" and must be masked
    pred = y + rng.normal(0, 1, size=y.shape)
    observed = rng.random(y.shape) > 0.05
    mask = observed & (y != 0)
    expected, y_bar = numpy_reference(pred, y, mask)
    metrics = StreamingMetrics(12, y_bar)
    for begin in range(0, 37, 8):                # stream in uneven batches
        sl = slice(begin, begin + 8)
        metrics.update(torch.tensor(pred[sl]), torch.tensor(y[sl]), torch.tensor(mask[sl]))
    got = metrics.compute()
    for name, value in expected.items():
        assert math.isclose(got[name], value, rel_tol=1e-9), name
    h3 = mask[:, 2]
    assert math.isclose(got["mae@h3"], np.abs(pred[:, 2] - y[:, 2])[h3].mean(), rel_tol=1e-9)


def test_masked_entries_do_not_change_metrics():
    y = torch.ones(2, 12, 3, 1) * 5
    pred = y.clone()
    pred[0, 0, 0, 0] = 1e6                       # a wild prediction on a missing entry
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[0, 0, 0, 0] = False
    metrics = StreamingMetrics(12, 4.0)
    metrics.update(pred, y, mask)
    assert metrics.compute()["mae"] == 0.0


def test_mape_skips_zero_and_near_zero_targets_that_other_metrics_keep():
    y = torch.tensor([[[[0.0], [1e-17], [2.0], [4.0]]]])       # (1, 1, 4, 1): zero volumes, a float-noise zero
    pred = torch.tensor([[[[1.0], [1.0], [3.0], [2.0]]]])
    metrics = StreamingMetrics(1, 1.5)
    metrics.update(pred, y, torch.ones_like(y, dtype=torch.bool))
    got = metrics.compute()
    assert math.isclose(got["mape"], 100 * (1 / 2 + 2 / 4) / 2)
    assert math.isclose(got["mae"], (1 + 1 + 1 + 2) / 4)         # every observed target counts here


def test_mape_is_nan_when_every_target_is_zero():
    y = torch.zeros(2, 1, 3, 1)
    metrics = StreamingMetrics(1, 0.0)
    metrics.update(y + 1, y, torch.ones_like(y, dtype=torch.bool))
    assert math.isnan(metrics.compute()["mape"])
