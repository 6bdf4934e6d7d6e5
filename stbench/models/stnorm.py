"""ST-Norm (Deng et al., KDD 2021, "ST-Norm: spatial and temporal normalization for multi-variate
time series forecasting") on its WaveNet backbone, as in the authors' code.

Each of the 4 layers (1 block, dilations 1, 2, 4, 8, kernel 2, 16 channels) feeds the concatenation
[h, TN(h), SN(h)] to a gated dilated convolution tanh(filter) * sigmoid(gate); a 1x1 convolution adds
to the skip sum and another, with the layer input, forms the residual. Output: ReLU -> 1x1 conv ->
ReLU -> 1x1 conv to L_out * C_out. Inputs are left-padded with zeros to the receptive field of 16
steps (the original's n_his); the head reads the last time step.

Normalisations (as the paper defines them), for h (B, C, N, T), eps = 1e-5:

- spatial normalisation SN: each (sample, channel, time step) standardised over the locations, mean
  and unbiased variance, then gamma_c h + beta_c (shared by all locations), as in the original;
- temporal normalisation TN: each (sample, location, channel) series standardised over the time
  steps of its window, mean and unbiased variance (the original's ``track_running_stats=False``
  statistics), then gamma_c h + beta_c.

The original's default TN takes its statistics over the batch and the window per location, keeps
running averages for evaluation, and has a scale and shift per (location, channel): that ties the
model to its N locations. STemDist runs ST-Norm on any number of locations (appendix E, footnote 1:
"adjusted to normalize along the spatial dimension"; in its reference code TN pools the statistics
over batch, locations and time, i.e. a per-channel batch norm with running averages, and shares
gamma and beta). Here TN keeps the paper's per-series temporal statistics and shares gamma, beta
across locations, so the model is inductive as it is and needs no location encoder (``loc_input``
is ignored). ``temporal_stats="stemdist"`` selects the STemDist reference's adjustment instead.

Hyperparameters: the original's (hidden_channels 16, n_layers 4, blocks 1, kernel 2, both norms on),
which the STemDist reference also uses.

Parameters (1 input, 1 target channel, 12 in / 12 out): 15,084 for any N (start 32; per layer TN 32,
SN 32, filter and gate 2 x (48 x 16 x 2 + 16), skip 272 and, except in the last layer, residual 272;
end convolutions 272 + 204). The original at N locations: 15,228 + 128 N (its TN scales and shifts are
2 x 16 per location and layer, and it builds the last layer's residual convolution (272), whose output
is never used).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import check_input, heads_out
from stbench.registry import MODELS

EPS = 1e-5
TEMPORAL_STATS = ("window", "stemdist")


def standardise(h: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """(h - mean) / sqrt(var + eps) over ``dims``, unbiased variance (population variance for one value)."""
    count = 1
    for d in dims:
        count *= h.shape[d]
    var = h.var(dim=dims, keepdim=True, correction=1 if count > 1 else 0)
    return (h - h.mean(dim=dims, keepdim=True)) / (var + EPS).sqrt()


class SpatialNorm(nn.Module):
    """SN: standardise over the locations of each (sample, channel, time step); affine per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return standardise(h, (2,)) * self.gamma + self.beta


class TemporalNorm(nn.Module):
    """TN: standardise each (sample, location, channel) over its window's time steps; affine per channel.

    ``stats="stemdist"``: the STemDist reference's statistics instead, over (batch, locations, time)
    per channel (biased variance), with running averages (momentum 0.1) used in evaluation.
    """

    def __init__(self, channels: int, stats: str = "window", momentum: float = 0.1):
        super().__init__()
        if stats not in TEMPORAL_STATS:
            raise ValueError(f"temporal_stats must be one of {TEMPORAL_STATS}, got {stats!r}")
        self.stats, self.momentum = stats, momentum
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        if stats == "stemdist":
            self.register_buffer("running_mean", torch.zeros(1, channels, 1, 1))
            self.register_buffer("running_var", torch.ones(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.stats == "window":
            return standardise(h, (3,)) * self.gamma + self.beta
        if self.training:
            mean = h.mean(dim=(0, 2, 3), keepdim=True)
            var = h.var(dim=(0, 2, 3), keepdim=True, correction=0)
            count = h.numel() // h.shape[1]
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * count / max(count - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        return (h - mean) / (var + EPS).sqrt() * self.gamma + self.beta


@MODELS.register("stnorm", family="tcn",
                 description="ST-Norm: WaveNet with spatial and temporal normalisation (inductive)")
class STNorm(STModel):
    """ST-Norm. Hyperparameters: channels (16), kernel_size (2), blocks (1), layers (4), tnorm, snorm
    (both True), temporal_stats ("window", or "stemdist" for the STemDist reference's TN)."""

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, channels: int = 16, kernel_size: int = 2,
                 blocks: int = 1, layers: int = 4, tnorm: bool = True, snorm: bool = True,
                 temporal_stats: str = "window"):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        dilations = [2 ** i for _ in range(blocks) for i in range(layers)]
        self.receptive_field = 1 + (kernel_size - 1) * sum(dilations)
        self.seq_len = max(input_len, self.receptive_field)
        parts = 1 + int(tnorm) + int(snorm)
        self.start_conv = nn.Conv2d(in_channels, channels, 1)
        self.tn = nn.ModuleList(TemporalNorm(channels, temporal_stats) for _ in dilations) if tnorm else None
        self.sn = nn.ModuleList(SpatialNorm(channels) for _ in dilations) if snorm else None
        self.filter_convs = nn.ModuleList(
            nn.Conv2d(parts * channels, channels, (1, kernel_size), dilation=(1, d)) for d in dilations)
        self.gate_convs = nn.ModuleList(
            nn.Conv2d(parts * channels, channels, (1, kernel_size), dilation=(1, d)) for d in dilations)
        # the last layer only feeds the skip sum: the original builds its residual convolution, never used
        self.residual_convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in dilations[1:])
        self.skip_convs = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in dilations)
        self.end_conv_1 = nn.Conv2d(channels, channels, 1)
        self.end_conv_2 = nn.Conv2d(channels, output_len * out_channels, 1)

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, _ = check_input(self, x)
        h = self.start_conv(F.pad(x.permute(0, 3, 2, 1), (self.seq_len - length, 0)))   # (B, C, N, T)
        skip = 0
        for i in range(len(self.filter_convs)):
            residual, parts = h, [h]
            if self.tn is not None:
                parts.append(self.tn[i](h))
            if self.sn is not None:
                parts.append(self.sn[i](h))
            h = torch.cat(parts, dim=1)
            h = torch.tanh(self.filter_convs[i](h)) * torch.sigmoid(self.gate_convs[i](h))
            s = self.skip_convs[i](h)
            skip = s + (skip[..., -s.size(3):] if torch.is_tensor(skip) else 0)
            if i < len(self.residual_convs):
                h = self.residual_convs[i](h) + residual[..., -h.size(3):]
        out = self.end_conv_2(F.relu(self.end_conv_1(F.relu(skip[..., -1:]))))   # (B, L_out * C_out, N, 1)
        return heads_out(out, b, n, self.output_len, self.out_channels)
