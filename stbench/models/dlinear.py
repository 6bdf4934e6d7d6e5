"""DLinear (Zeng, Chen, Zhang, Xu, AAAI 2023, "Are Transformers Effective for Time Series Forecasting?").

Every series is split into a trend, its moving average over ``kernel_size`` steps (25 in the paper and
in CondTSF's distillation model) with the first and last value repeated at the edges (the original
``moving_avg``), and a remainder, the series minus its trend. One linear map L_in -> L_out forecasts
the trend, another the remainder, and the forecast is their sum. The weights are shared by every series
("individual=False", the setting CondTSF distils with): locations never interact, so the model is
inductive and any number of locations works (``loc_input`` is ignored).

Choices:

* The moving average is a fixed (L_in x L_in) averaging matrix (a buffer, not a parameter) that folds
  the edge replication in; it equals the original padding + ``AvgPool1d`` and has a double backward
  for gradient and trajectory matching. The kernel is clamped to the input length for short inputs
  (``min(kernel_size, L_in)``, so 25 -> 12 at 12 input steps): with edge replication the unclamped
  kernel runs too, but most of its window would be repeated edge values. ``clamp_kernel=False``
  keeps the kernel as given, e.g. CondTSF's exact 25-step average over 24-step windows. The padding is
  ``(k - 1) // 2`` steps in front and ``k - 1 - (k - 1) // 2`` at the end, which for the original odd
  kernels is the original's symmetric padding and keeps the output length L_in for even ones (the
  original's symmetric padding shortens the trend by one step there).
* Channels. Each of the C_in input channels is forecast from its own history with the same two maps
  (channel independence, as DLinear treats the variates of a multivariate series), giving C_in
  per-channel forecasts. With C_in == C_out (the original setting, e.g. one target channel fed alone)
  these are the output, channel c forecasting target c: the built-in datasets list their targets
  first (meta ``targets`` [0]) and a set fed the targets alone (``input_channels``) has exactly them,
  in order. With C_in != C_out (extra input features), a linear channel head (C_in -> C_out, bias)
  reads the targets out of the per-channel forecasts. It is initialised to take output c from input
  channel c (zero for the other channels and the bias), so at initialisation the model is the
  original DLinear applied to the target channel, and it learns how much each extra feature's
  forecast helps; the model stays linear in its input, so it stays a DLinear.
* ``nn.Linear``'s default initialisation for the two temporal maps, as the original and CondTSF's
  ``model/arch/dlinear.py``.

Parameters: 2 * (L_in * L_out + L_out) for the temporal maps, plus C_in * C_out + C_out for the head
when C_in != C_out; independent of N. At 12 in / 12 out and one channel that is 2 * (144 + 12) = 312,
exactly the original shared-weight DLinear's count (2 * (24 * 24 + 24) = 1200 at CondTSF's 24 / 24).
"""
from __future__ import annotations

import torch
from torch import nn

from stbench.models.base import STModel
from stbench.registry import MODELS


def moving_average_matrix(length: int, kernel_size: int) -> torch.Tensor:
    """(length, length) matrix A with (A @ x)[t] = the mean of x over the k = ``kernel_size`` steps
    around t, with the first and last value repeated beyond the edges (DLinear's ``moving_avg``)."""
    k = int(kernel_size)
    front = (k - 1) // 2
    a = torch.zeros(length, length, dtype=torch.float64)
    for t in range(length):
        for j in range(t - front, t - front + k):       # padded positions, clamped to the edges
            a[t, min(max(j, 0), length - 1)] += 1.0 / k
    return a


@MODELS.register("dlinear", family="linear",
                 description="DLinear: moving-average trend/remainder, one shared linear map each (inductive)")
class DLinear(STModel):
    """Channel-independent DLinear with weights shared across locations; ignores ``loc_input``."""

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, kernel_size: int = 25,
                 clamp_kernel: bool = True):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1 (got {kernel_size})")
        self.kernel_size = min(kernel_size, input_len) if clamp_kernel else kernel_size
        self.register_buffer("average", moving_average_matrix(input_len, self.kernel_size).float(),
                             persistent=False)
        self.linear_trend = nn.Linear(input_len, output_len)
        self.linear_remainder = nn.Linear(input_len, output_len)
        self.head = None
        if in_channels != out_channels:
            self.head = nn.Linear(in_channels, out_channels)
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
                for c in range(min(in_channels, out_channels)):
                    self.head.weight[c, c] = 1.0

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trend, remainder) of series along the last axis (length L_in); trend + remainder = x."""
        trend = x @ self.average.to(x.dtype).T
        return trend, x - trend

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C_in) -> (B, L_out, N, C_out)."""
        series = x.permute(0, 2, 3, 1)                        # (B, N, C_in, L_in)
        trend, remainder = self.decompose(series)
        out = self.linear_trend(trend) + self.linear_remainder(remainder)   # (B, N, C_in, L_out)
        out = out.permute(0, 3, 1, 2)                          # (B, L_out, N, C_in)
        return out if self.head is None else self.head(out)
