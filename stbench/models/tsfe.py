"""TSFE, the time-series feature extractor of TimeDC (Miao et al., "Less is More: Efficient Time Series
Dataset Condensation via Two-fold Modal Matching", PVLDB 18(2), 2024/25; Alg. 1, Eq. 3-4).

TimeDC splits a multivariate series into univariate channels (channel independence), patches each one
and runs a stack of ``TSOperator`` s, h^j = Norm(FC(MultiHead(h^{j-1}))) (Eq. 4); its public code
(uestc-liuzq/STdistillation, ``network_patch.py::TSFE_Model``) is PatchTST with series decomposition.
In stbench every location is one channel (``inductive``: the weights are shared by all locations,
which never interact, so any number of locations works), and a location's C input features enter
each patch together. Per location and window:

1. decomposition (``decompose``): trend = moving average over time (kernel ``kernel``, the window's
   first/last value repeated as padding, as Autoformer/PatchTST), remainder = input - trend;
2. for each of the two parts its own branch: RevIN (``revin``: every location's window normalised per
   feature channel by its own mean and standard deviation over time, with a learned affine map
   shared by all locations), patching (``patch_len``, ``stride``, the last value repeated ``stride``
   times at the end, PatchTST's ``padding_patch='end'``: P = (L_in - patch_len) // stride + 2
   patches), a linear patch embedding plus a learned positional embedding, ``layers`` post-norm
   transformer layers (multi-head self-attention over the patches, GELU feed-forward of ``d_ff``,
   LayerNorm, dropout), a flatten head to L_out * C_out, and RevIN's inverse;
3. forecast = trend branch + remainder branch.

``features(x)`` returns every branch's TSOperator outputs h^1..h^J (each (B, N, P, d_model), before
the head), the intermediate features TimeDC's frequency matching compares.

Defaults against the paper/code. The scripts use look-back 336 with patch 16 / stride 8 (42 patches)
and decomposition kernel 25; stbench windows are 12 steps, so the defaults are patch 4 / stride 2
(the same 2:1 patch:stride overlap; 6 patches of 12 steps) and kernel 5 (odd, so the trend keeps the
window's length). The encoder is the scripts' small-dataset (ETTh1) setting: 3 layers, 4 heads,
d_model 16, d_ff 128, dropout 0.3 (the large-dataset setting is d_model 128, 16 heads, d_ff 256,
dropout 0.2). Deviations from the PatchTST code, all for channel independence, inductiveness or
double differentiability: LayerNorm instead of BatchNorm (BatchNorm mixes locations in training
mode and keeps running buffers that a functional student never updates), RevIN's affine map per
feature channel instead of per variate (variates are locations here), no residual attention scores
between layers, and attention written out (softmax(QK^T/sqrt(d)) V, which has a double backward;
sequences are 6 patches long). Output channel k is de-normalised with the statistics of input
channel k (the datasets put their target first, meta ``targets`` [0]; with more outputs than inputs,
input channel k mod C).

Parameters (C input channels, C_out targets, 12 in / 12 out, defaults): per branch 80 + 64 (C - 1)
(patch embedding) + 96 (positions) + 3 x 5,392 (layers) + 1,164 C_out (head) + 2 C (RevIN); for
C = C_out = 1 that is 17,518 per branch and 35,036 in all, for any number of locations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import check_input
from stbench.registry import MODELS


def moving_average(x: torch.Tensor, kernel: int, dim: int) -> torch.Tensor:
    """Mean over a centred window of ``kernel`` (odd) steps along ``dim``, the first and last values
    repeated (kernel - 1) / 2 times as padding, so the result has the length of ``x`` (Autoformer's
    ``series_decomp``; TimeDC's Eq. 6 AvgPool(Padding(h)))."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"moving-average kernel must be odd and >= 1, got {kernel}")
    if kernel == 1:
        return x
    half = (kernel - 1) // 2
    h = x.movedim(dim, -1)
    shape = h.shape
    h = h.reshape(-1, 1, shape[-1])
    h = torch.cat([h[..., :1].expand(-1, -1, half), h, h[..., -1:].expand(-1, -1, half)], dim=-1)
    h = F.avg_pool1d(h, kernel, stride=1)
    return h.reshape(shape).movedim(-1, dim)


class TSOperator(nn.Module):
    """One post-norm transformer layer over the patches of every (window, location) sequence."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d_model, d_model) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(S, P, d) -> (S, P, d)."""
        s, length, d = h.shape

        def split(z):
            return z.reshape(s, length, self.heads, d // self.heads).transpose(1, 2)   # (S, H, P, d_h)

        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
        h = self.norm1(h + self.drop1(self.out(att.transpose(1, 2).reshape(s, length, d))))
        return self.norm2(h + self.drop2(self.ff(h)))


class _Branch(nn.Module):
    """RevIN, patching, embedding, TSOperators and the flatten head for one decomposed part."""

    def __init__(self, in_channels: int, out_channels: int, input_len: int, output_len: int, patch_len: int,
                 stride: int, d_model: int, heads: int, d_ff: int, layers: int, dropout: float, revin: bool):
        super().__init__()
        self.patch_len, self.stride, self.revin = patch_len, stride, revin
        self.num_patches = (input_len - patch_len) // stride + 2
        self.output_len, self.out_channels = output_len, out_channels
        self.embed = nn.Linear(patch_len * in_channels, d_model)
        self.position = nn.Parameter(torch.empty(self.num_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TSOperator(d_model, heads, d_ff, dropout) for _ in range(layers))
        self.head = nn.Linear(self.num_patches * d_model, output_len * out_channels)
        if revin:
            self.affine_weight = nn.Parameter(torch.ones(in_channels))
            self.affine_bias = nn.Parameter(torch.zeros(in_channels))
        self.register_buffer("out_index", torch.arange(out_channels) % in_channels, persistent=False)

    def encode(self, x: torch.Tensor):
        """x (S, L, C) -> (layer outputs [(S, P, d)] * layers, RevIN statistics or None)."""
        stats = None
        if self.revin:
            mean = x.mean(dim=1, keepdim=True)
            std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
            x = (x - mean) / std * self.affine_weight + self.affine_bias
            stats = (mean, std)
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride, -1)], dim=1)          # padding_patch='end'
        patches = x.unfold(1, self.patch_len, self.stride)                          # (S, P, C, patch_len)
        patches = patches.transpose(2, 3).reshape(x.shape[0], self.num_patches, -1)
        h = self.dropout(self.embed(patches) + self.position)
        outputs = []
        for layer in self.layers:
            h = layer(h)
            outputs.append(h)
        return outputs, stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, L_in, C) -> (S, L_out, C_out)."""
        outputs, stats = self.encode(x)
        h = outputs[-1]
        y = self.head(h.reshape(h.shape[0], -1)).reshape(-1, self.output_len, self.out_channels)
        if stats is not None:
            i = self.out_index
            mean, std = stats
            y = (y - self.affine_bias[i]) / (self.affine_weight[i] + 1e-10) * std[..., i] + mean[..., i]
        return y


@MODELS.register("tsfe", family="transformer",
                 description="TimeDC's TSFE: channel-independent decomposed patch transformer with RevIN (inductive)")
class TSFE(STModel):
    """TimeDC's time-series feature extractor. Hyperparameters: patch_len, stride, kernel (trend
    moving average, odd), d_model, heads, d_ff, layers, dropout, revin. Ignores ``loc_input``."""

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, patch_len: int = 4, stride: int = 2,
                 kernel: int = 5, d_model: int = 16, heads: int = 4, d_ff: int = 128, layers: int = 3,
                 dropout: float = 0.3, revin: bool = True):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        if not 1 <= patch_len <= input_len or stride < 1:
            raise ValueError(f"patch_len {patch_len} / stride {stride} do not fit a {input_len}-step input")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1, got {kernel}")
        self.kernel = kernel
        args = (in_channels, out_channels, input_len, output_len, patch_len, stride, d_model, heads, d_ff,
                layers, dropout, revin)
        self.trend, self.remainder = _Branch(*args), _Branch(*args)

    def decompose(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(trend, remainder) of x (B, L_in, N, C) along time; trend + remainder = x."""
        trend = moving_average(x, self.kernel, dim=1)
        return trend, x - trend

    @staticmethod
    def _series(x: torch.Tensor) -> torch.Tensor:
        b, length, n, c = x.shape
        return x.permute(0, 2, 1, 3).reshape(b * n, length, c)        # one sequence per (window, location)

    def features(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """{"trend": [h^1..h^J], "remainder": [h^1..h^J]}: each branch's TSOperator outputs, each of
        shape (B, N, P, d_model), before the head."""
        b, _, n, _ = check_input(self, x)
        out = {}
        for name, part in zip(("trend", "remainder"), self.decompose(x)):
            outputs, _ = getattr(self, name).encode(self._series(part))
            out[name] = [h.reshape(b, n, *h.shape[1:]) for h in outputs]
        return out

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, _, n, _ = check_input(self, x)
        trend, remainder = self.decompose(x)
        y = self.trend(self._series(trend)) + self.remainder(self._series(remainder))
        return y.reshape(b, n, self.output_len, self.out_channels).transpose(1, 2)
