"""AGCRN (Bai et al., NeurIPS 2020, "Adaptive graph convolutional recurrent network") in two forms.

- ``agcrn``: transductive; one learned N x 10 node-embedding table E.
- ``agcrn-le``: inductive; E comes from the STemDist location encoder (as ``mtgnn-le``), the form
  STemDist's appendix Table VI trains on its distilled sets.

Architecture (the paper's method section). E feeds both of the paper's modules: node adaptive
parameter learning (NAPL: each location's weights W_n = E_n W_pool and bias b_n = E_n b_pool) and
the data adaptive graph (DAGG: A = softmax(ReLU(E E^T))), combined in a Chebyshev graph convolution
of order K = 2 ([x, A x] times the location's weights). Two stacked GRU layers of 64 units whose
gates and candidate are such convolutions run over the 12 input steps; the last layer's final state
goes through a convolution of width 64 to L_out * C_out outputs per location (the original's
``end_conv``). Hyperparameters: the original's PEMSD4 defaults (embed_dim 10, rnn_units 64,
num_layers 2, cheb_k 2), which the STemDist reference also uses. Initialisation as the original's
training script: Xavier-uniform for every parameter with more than one dimension, U(0, 1) otherwise.

Memory. A is one (N, N) matrix per forward and no power of it is formed (T_k A x by recurrence on
the signal). The location weights W_n (N x K C_in x C_out) depend only on E, so they are computed
once per forward and shared by the 12 steps (the original recomputes the same tensor at every step
and for every call); at 2,000 locations they take 0.6 GB, independent of the batch. Each step then
multiplies each location's [x, A x] by its own weights in one batched product over locations.

Parameters (1 input, 1 target channel, 12 in / 12 out): 745,740 + 10 N for ``agcrn`` (gate and update
pools of layer 1: 10 x 2 x 65 x (128 + 64) + 10 x (128 + 64); layer 2 the same with 128 inputs;
head 64 x 12 + 12; E 10 N), which is the original's count: 748,810 at PEMSD4's 307 locations.
``agcrn-le``: 745,740 + 5,034 (location encoder, d = 32) = 750,774 for any N.
"""
from __future__ import annotations

import torch
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import LocationVectors, check_input, chebyshev_terms, heads_out, learned_adjacency
from stbench.registry import MODELS


class AdaptiveGraphConv(nn.Module):
    """out_n = sum_k (T_k(A) x)_n (E_n W_pool[:, k]) + E_n b_pool, for x (B, N, C_in)."""

    def __init__(self, c_in: int, c_out: int, cheb_k: int, embed_dim: int):
        super().__init__()
        self.cheb_k = cheb_k
        self.weights_pool = nn.Parameter(torch.empty(embed_dim, cheb_k, c_in, c_out))
        self.bias_pool = nn.Parameter(torch.empty(embed_dim, c_out))

    def location_weights(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K C_in, C_out) weights and (N, C_out) biases of the locations with embeddings e (N, D)."""
        d, k, c_in, c_out = self.weights_pool.shape
        return (e @ self.weights_pool.reshape(d, -1)).reshape(-1, k * c_in, c_out), e @ self.bias_pool

    def forward(self, x: torch.Tensor, adj: torch.Tensor, weights) -> torch.Tensor:
        w, bias = weights
        terms = chebyshev_terms(x, lambda h: adj @ h, self.cheb_k)          # each (B, N, C_in)
        xg = torch.cat(terms, dim=-1).transpose(0, 1)                       # (N, B, K C_in), k-major
        return torch.bmm(xg, w).transpose(0, 1) + bias                      # one product per location


class AGCRNCell(nn.Module):
    """GRU cell whose gates and candidate are adaptive graph convolutions."""

    def __init__(self, c_in: int, hidden: int, cheb_k: int, embed_dim: int):
        super().__init__()
        self.hidden = hidden
        self.gate = AdaptiveGraphConv(c_in + hidden, 2 * hidden, cheb_k, embed_dim)
        self.update = AdaptiveGraphConv(c_in + hidden, hidden, cheb_k, embed_dim)

    def forward(self, x, state, adj, gate_weights, update_weights):
        """x (B, N, C_in), state (B, N, H) -> new state (B, N, H)."""
        reset, keep = torch.sigmoid(self.gate(torch.cat([x, state], dim=-1), adj, gate_weights)).chunk(2, dim=-1)
        candidate = torch.tanh(self.update(torch.cat([x, reset * state], dim=-1), adj, update_weights))
        return keep * state + (1 - keep) * candidate


class _AGCRNBackbone(STModel):
    encoder = False

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, embed_dim: int = 10, rnn_units: int = 64,
                 num_layers: int = 2, cheb_k: int = 2, encoder_hidden: int = 32, encoder_relu: bool = False):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        self.rnn_units = rnn_units
        self.cells = nn.ModuleList(
            AGCRNCell(in_channels if i == 0 else rnn_units, rnn_units, cheb_k, embed_dim) for i in range(num_layers))
        self.end_conv = nn.Conv2d(1, output_len * out_channels, (1, rnn_units))
        self.embedding = LocationVectors(num_locations, embed_dim, input_len, in_channels, owner="agcrn",
                                         encoder=self.encoder, encoder_hidden=encoder_hidden,
                                         encoder_relu=encoder_relu)
        for name, p in self.named_parameters():   # the original's initialisation; the encoder keeps its own
            if name.startswith("embedding.encoder."):
                continue
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.uniform_(p)

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, _ = check_input(self, x)
        e = self.embedding(loc_input, n)
        adj = learned_adjacency(e, e)
        inputs = x
        for cell in self.cells:
            gate_w, update_w = cell.gate.location_weights(e), cell.update.location_weights(e)
            state = x.new_zeros(b, n, self.rnn_units)
            outputs = []
            for t in range(length):
                state = cell(inputs[:, t], state, adj, gate_w, update_w)
                outputs.append(state)
            inputs = torch.stack(outputs, dim=1)
        out = self.end_conv(state.unsqueeze(1))                 # (B, L_out * C_out, N, 1)
        return heads_out(out, b, n, self.output_len, self.out_channels)


@MODELS.register("agcrn", family="stgnn",
                 description="AGCRN: GRU over node-adaptive graph convolutions, learned embeddings (transductive)")
class AGCRN(_AGCRNBackbone):
    """AGCRN with a learned N x ``embed_dim`` table. Hyperparameters: embed_dim, rnn_units, num_layers, cheb_k."""

    inductive = False


@MODELS.register("agcrn-le", family="stgnn",
                 description="AGCRN with the STemDist location encoder (inductive)")
class AGCRNLE(_AGCRNBackbone):
    """AGCRN whose node embeddings E come from the STemDist location encoder; needs ``loc_input``.
    Extra hyperparameters: encoder_hidden (d = 32), encoder_relu."""

    inductive = True
    encoder = True
