"""Masked, streaming forecasting metrics: relative MAE/RMSE, MAE, RMSE, MAPE, overall and per horizon.

Relative errors follow the STemDist paper (eq. 6) exactly as its reference code computes them: sums
pooled over every window, horizon step, location and target channel of the evaluated split (overlapping
windows count a step once per window), against the mean target of that same split:

    relative MAE  = sum |y - y_hat| / sum |y - y_bar|
    relative RMSE = sqrt(sum (y - y_hat)^2 / sum (y - y_bar)^2)

Entries that are missing (mask False) never enter any sum; datasets whose zeros mean "no reading"
(traffic) also mask y == 0, as the reference does. MAPE is undefined at a zero target, so it also skips
targets with |y| <= 5e-5 (BasicTS's masked MAPE does the same): CHARGED volumes are often 0, and SZ-TAXI
stores some zero speeds as 1e-17. Sums are accumulated in float64 per horizon step, so metrics stream
over batches without holding predictions.
"""
from __future__ import annotations

import math

import torch

_SUMS = ("count", "abs", "sq", "ape", "ape_count", "abs_dev", "sq_dev")
MAPE_MIN_TARGET = 5e-5


class StreamingMetrics:
    def __init__(self, output_len: int, target_mean: float, device: str | torch.device = "cpu"):
        self.target_mean = float(target_mean)
        self.sums = {k: torch.zeros(output_len, dtype=torch.float64, device=device) for k in _SUMS}

    def update(self, pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> None:
        """pred, y: (B, L_out, N, C_t) in raw units; mask: same shape, True where y counts."""
        m = mask.to(pred.dtype)
        err = (pred - y) * m
        dev = (y - self.target_mean) * m
        ape_mask = mask & (y.abs() > MAPE_MIN_TARGET)
        safe_y = torch.where(ape_mask, y.abs(), torch.ones_like(y))
        self._add("count", m)
        self._add("abs", err.abs())
        self._add("sq", err * err)
        self._add("ape", err.abs() * ape_mask / safe_y)
        self._add("ape_count", ape_mask.to(pred.dtype))
        self._add("abs_dev", dev.abs())
        self._add("sq_dev", dev * dev)

    def _add(self, name: str, values: torch.Tensor) -> None:
        """Element-wise work stays in the input dtype; the sums are float64 per horizon step."""
        self.sums[name] += values.sum(dim=(0, 2, 3), dtype=torch.float64)

    def compute(self) -> dict[str, float]:
        """Overall metrics plus MAE/RMSE/MAPE at every horizon step h (keys ``mae@h3`` ...)."""
        s = {k: v.cpu() for k, v in self.sums.items()}
        out = _summarise({k: float(v.sum()) for k, v in s.items()})
        for h in range(1, len(s["count"]) + 1):
            for name, value in _summarise({k: float(v[h - 1]) for k, v in s.items()}).items():
                if name in ("mae", "rmse", "mape"):
                    out[f"{name}@h{h}"] = value
        return out


def _summarise(s: dict[str, float]) -> dict[str, float]:
    n = s["count"]
    if n == 0:
        return {k: math.nan for k in ("mae", "rmse", "mape", "rel_mae", "rel_rmse")}
    return {
        "mae": s["abs"] / n,
        "rmse": math.sqrt(s["sq"] / n),
        "mape": 100.0 * s["ape"] / s["ape_count"] if s["ape_count"] > 0 else math.nan,
        "rel_mae": s["abs"] / s["abs_dev"] if s["abs_dev"] > 0 else math.nan,
        "rel_rmse": math.sqrt(s["sq"] / s["sq_dev"]) if s["sq_dev"] > 0 else math.nan,
    }


def target_mean(batches) -> float:
    """Pooled mean of the masked targets of a split (the y_bar of the relative metrics); the sums
    stay on the batches' device and are read once at the end (one host synchronisation)."""
    total = count = None
    for batch in batches:
        part_total, part_count = (batch.y.double() * batch.mask).sum(), batch.mask.sum(dtype=torch.float64)
        total = part_total if total is None else total + part_total
        count = part_count if count is None else count + part_count
    if count is None or float(count) == 0:
        return math.nan
    return float(total / count)
