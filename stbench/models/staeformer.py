"""STAEformer (Liu et al., CIKM 2023, "STAEformer: spatio-temporal adaptive embedding makes vanilla
transformer SOTA for traffic forecasting"), one of ST-Prune's cross-architecture backbones, in two forms.

- ``staeformer``: transductive; the spatio-temporal adaptive embedding is a learned L_in x N x 80
  tensor (Xavier-uniform).
- ``staeformer-le``: inductive; the STemDist location encoder maps each location's encoder input to
  its L_in x 80 adaptive embedding.

Architecture: the input is projected to 24 dimensions per (step, location) and
concatenated with the adaptive embedding (model dimension 104); 3 transformer layers attend along
time (per location), then 3 along the locations (per time step); each layer is post-norm multi-head
self-attention (4 heads, Q/K/V/out projections) and a ReLU feed-forward of 256, dropout 0.1 after
each. A linear layer maps each location's L_in x 104 features to L_out * C_out (the mixed projection).
Hyperparameters: the original's (input_embedding_dim 24, adaptive_embedding_dim 80, feed_forward_dim
256, num_heads 4, num_layers 3, dropout 0.1); the time-of-day and day-of-week embeddings (24 each) are
off (``tod_embedding_dim = dow_embedding_dim = 0`` in the original), as stbench models get no
timestamps.

Memory. The original computes the spatial attention scores explicitly, a (B, L, heads, N, N) tensor:
49 GB at batch 64 on 2,000 locations. Here the attention goes through torch's fused
``scaled_dot_product_attention`` (exact, no mask, no attention dropout, as in the original), whose CPU
and CUDA kernels never hold the N x N scores; ``twice_differentiable()`` switches to the explicit
product, which has a double backward (gradient matching on small condensed sets).

Parameters (1 input, 1 target channel, 12 in / 12 out): ``staeformer`` 601,260 + 960 N (input
projection 48, 6 layers of 97,704, output projection 14,988, adaptive embedding 12 x 80 N), equal to
the original at the same settings; ``staeformer-le`` 601,260 + 36,384 (location encoder, d = 32, to
12 x 80 outputs) = 637,644 for any N. The original at its defaults (temporal embeddings on, model
dimension 152, input_dim 3) has 1,223,460 at PEMS08's 170 locations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import LocationVectors, check_input
from stbench.registry import MODELS


class SelfAttentionLayer(nn.Module):
    """Post-norm transformer layer attending along one axis of (B, L, N, D)."""

    def __init__(self, dim: int, feed_forward_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.fc_q, self.fc_k, self.fc_v = (nn.Linear(dim, dim) for _ in range(3))
        self.out_proj = nn.Linear(dim, dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, feed_forward_dim), nn.ReLU(),
                                          nn.Linear(feed_forward_dim, dim))
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.explicit = False   # True: softmax(Q K^T / sqrt(d)) V written out (double backward)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """(S, T, D) -> (S, T, D): multi-head self-attention over the T axis of S sequences."""
        s, t, d = h.shape

        def heads(z):
            return z.reshape(s, t, self.num_heads, d // self.num_heads).transpose(1, 2)   # (S, H, T, d_h)

        q, k, v = heads(self.fc_q(h)), heads(self.fc_k(h)), heads(self.fc_v(h))
        if self.explicit:
            out = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(s, t, d))

    def forward(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """x (B, L, N, D); attention along ``dim`` (1: time, 2: locations)."""
        h = x.transpose(dim, 2)                                   # the attended axis next to D
        shape = h.shape
        h = h.reshape(-1, shape[2], shape[3])
        h = self.ln1(h + self.dropout1(self.attention(h)))
        h = self.ln2(h + self.dropout2(self.feed_forward(h)))
        return h.reshape(shape).transpose(dim, 2)


class _STAEformerBackbone(STModel):
    encoder = False

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, input_embedding_dim: int = 24,
                 adaptive_embedding_dim: int = 80, feed_forward_dim: int = 256, num_heads: int = 4,
                 num_layers: int = 3, dropout: float = 0.1, encoder_hidden: int = 32, encoder_relu: bool = False):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        self.model_dim = input_embedding_dim + adaptive_embedding_dim
        if self.model_dim % num_heads:
            raise ValueError(f"model dimension {self.model_dim} is not divisible by num_heads={num_heads}")
        self.adaptive_dim = adaptive_embedding_dim
        self.input_proj = nn.Linear(in_channels, input_embedding_dim)
        self.adaptive = LocationVectors(num_locations, input_len * adaptive_embedding_dim, input_len, in_channels,
                                        owner="staeformer", encoder=self.encoder, encoder_hidden=encoder_hidden,
                                        encoder_relu=encoder_relu)
        if not self.encoder:   # the original's (L, N, 80) tensor, Xavier-uniform with its fans
            table = torch.empty(input_len, num_locations, adaptive_embedding_dim)
            nn.init.xavier_uniform_(table)
            with torch.no_grad():
                self.adaptive.table.copy_(table.transpose(0, 1).reshape(num_locations, -1))
        self.temporal_layers = nn.ModuleList(
            SelfAttentionLayer(self.model_dim, feed_forward_dim, num_heads, dropout) for _ in range(num_layers))
        self.spatial_layers = nn.ModuleList(
            SelfAttentionLayer(self.model_dim, feed_forward_dim, num_heads, dropout) for _ in range(num_layers))
        self.output_proj = nn.Linear(input_len * self.model_dim, output_len * out_channels)

    def twice_differentiable(self) -> _STAEformerBackbone:
        for layer in [*self.temporal_layers, *self.spatial_layers]:
            layer.explicit = True
        return self

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, _ = check_input(self, x)
        adaptive = self.adaptive(loc_input, n).reshape(n, length, self.adaptive_dim).transpose(0, 1)   # (L, N, 80)
        h = torch.cat([self.input_proj(x), adaptive.expand(b, -1, -1, -1)], dim=-1)                 # (B, L, N, D)
        for layer in self.temporal_layers:
            h = layer(h, dim=1)
        for layer in self.spatial_layers:
            h = layer(h, dim=2)
        out = self.output_proj(h.transpose(1, 2).reshape(b, n, length * self.model_dim))          # (B, N, L_out C_out)
        return out.reshape(b, n, self.output_len, self.out_channels).transpose(1, 2)


@MODELS.register("staeformer", family="transformer",
                 description="STAEformer: transformer with spatio-temporal adaptive embeddings (transductive)")
class STAEformer(_STAEformerBackbone):
    """STAEformer. Hyperparameters: input_embedding_dim, adaptive_embedding_dim, feed_forward_dim,
    num_heads, num_layers, dropout."""

    inductive = False


@MODELS.register("staeformer-le", family="transformer",
                 description="STAEformer with adaptive embeddings from the STemDist location encoder (inductive)")
class STAEformerLE(_STAEformerBackbone):
    """STAEformer whose adaptive embeddings come from the STemDist location encoder; needs ``loc_input``.
    Extra hyperparameters: encoder_hidden (d = 32), encoder_relu."""

    inductive = True
    encoder = True
