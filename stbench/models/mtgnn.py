"""MTGNN (Wu et al., KDD 2020, "Connecting the dots") in two forms.

- ``mtgnn``: transductive; the graph learner reads two learned embedding tables (N x node_dim).
- ``mtgnn-le``: inductive; the STemDist location encoder (paper Sec. IV-C, eq. 3-5) computes the two
  embeddings from ``loc_input``, so the model trains on N' locations and predicts on any N.

Both use the STemDist change to MTGNN (reference notes 3.4 and 6.17): each block's LayerNorm
normalises over (channels, time) per location instead of over (channels, locations, time). That
keeps the whole backbone node-count agnostic, so the two forms differ only in their embeddings.

Layout. MTGNN computes in (B, C, N, L). Here the blocks keep their tensors in memory as
(N, B, L, C), locations first and channels last, with the same parameters, state_dict and
arithmetic (issue 34, measured on LOS-LOOP's surrogate step at 1 CPU thread):
- graph propagation A_hat h is one matrix product A_hat @ h.view(N, -1), with no permute in or
  out (0.5 ms instead of 3.1-3.7 ms for the einsum, forward and backward);
- the 1x1 convolutions are matrix products over the channel axis (2.5 ms instead of 6.6 ms);
- the dilated convolutions run on the channels-last view (N, C, B, L) of the same memory, the
  format oneDNN is fastest in (8.2 ms instead of 12.0 ms).
Dropout masks are drawn in MTGNN's (B, C, N, L) order (``LayoutDropout``), so a seed draws the
same masks as the (B, C, N, L) computation and the outputs agree to float rounding (tested).
The output head (``end_conv_1``, ``end_conv_2``) still reads MTGNN's (B, C, N, 1) skip tensor:
methods that hook the last layer (DM's embedding, CRAIG, the selection proxies) see it unchanged.
"""
from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.sparse_propagation import SparseAdjacency
from stbench.registry import MODELS

KERNEL_SET = (2, 3, 6, 7)
# ``propagation="auto"`` multiplies by the nonzeros from this many locations on (top-k graphs are
# then at most (k + 1) / 512, about 4%, dense); below it the dense product is as fast or faster.
SPARSE_MIN_LOCATIONS = 512
PROPAGATIONS = ("auto", "dense", "sparse")


def receptive_field(layers: int, kernel: int, dilation_exponential: int) -> int:
    """Time steps seen by ``layers`` stacked dilated convolutions of width ``kernel`` (MTGNN)."""
    if dilation_exponential > 1:
        return 1 + (kernel - 1) * (dilation_exponential**layers - 1) // (dilation_exponential - 1)
    return 1 + layers * (kernel - 1)


class DilatedInception(nn.Module):
    """Parallel dilated convolutions (kernels 2, 3, 6, 7), cropped to the shortest, concatenated.

    Cropping every output to the last L - 6d steps means kernel k reads the last k taps of each
    width-7 window, so the four convolutions are one width-7 convolution whose kernel holds kernel k
    in its last k taps and zeros before (``kernel``). That single convolution is what runs: the same
    parameters, initialisation and output, in one call instead of four (2.4x faster forward and
    backward on CPU at ERA5-UK's 1,617 locations, with the gate's convolution merged in as well).
    """

    def __init__(self, c_in: int, c_out: int, dilation: int):
        super().__init__()
        if c_out % len(KERNEL_SET):
            raise ValueError(f"conv_channels must be divisible by {len(KERNEL_SET)}, got {c_out}")
        self.dilation = dilation
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out // len(KERNEL_SET), (1, k), dilation=(1, dilation))
            for k in KERNEL_SET
        )

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (c_out, c_in, 1, 7), bias (c_out,)): the four kernels right-aligned in 7 taps."""
        width = max(KERNEL_SET)
        weight = torch.cat([F.pad(conv.weight, (width - conv.weight.shape[-1], 0)) for conv in self.convs])
        return weight, torch.cat([conv.bias for conv in self.convs])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, *self.kernel(), dilation=(1, self.dilation))


def gated_inception(h: torch.Tensor, filter_: DilatedInception, gate: DilatedInception) -> torch.Tensor:
    """tanh(filter(h)) * sigmoid(gate(h)), MTGNN's gated temporal convolution, as one convolution.

    (N, B, L, C) -> (N, B, L - 6 d, C_out): the convolution runs on the (N, C, B, L) view of ``h``,
    which is channels-last in memory, so oneDNN reads and writes it without reordering.
    """
    (wf, bf), (wg, bg) = filter_.kernel(), gate.kernel()
    out = F.conv2d(h.permute(0, 3, 1, 2), torch.cat([wf, wg]), torch.cat([bf, bg]),
                   dilation=(1, filter_.dilation))
    filtered, gated = out.permute(0, 2, 3, 1).chunk(2, dim=-1)
    return torch.tanh(filtered) * torch.sigmoid(gated)


class TimeCollapse(nn.Conv2d):
    """Conv2d with kernel (1, L) applied to inputs of length L: a linear map of each location's
    (channels, time) block, computed as that contraction. Same parameters, initialisation and output.

    Written out because torch 2.13's oneDNN CPU convolution returns a wrong weight gradient for this
    shape with few input channels and L >= 14 (MTGNN's input skip: 1 channel, L = 19): relative
    error about 1 against float64, with occasional 1e25 values. The test suite checks the gradient.
    """

    def __init__(self, c_in: int, c_out: int, length: int):
        super().__init__(c_in, c_out, (1, length))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(N, B, L, C) -> (N, B, C_out): one matrix product over each (time, channel) block."""
        n, b, length, c = h.shape
        weight = self.weight[:, :, 0, :].transpose(1, 2).reshape(self.out_channels, length * c)
        return F.linear(h.reshape(n, b, length * c), weight, self.bias)


class Pointwise(nn.Conv2d):
    """MTGNN's 1x1 Conv2d applied to a channels-last tensor (..., C_in) -> (..., C_out): the same
    parameters and initialisation, computed as one matrix product over the last axis."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(c_in, c_out, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.weight.flatten(1), self.bias)


class LayoutDropout(nn.Dropout):
    """nn.Dropout on an (N, B, L, C) tensor whose mask is drawn as MTGNN's (B, C, N, L) layout
    draws it (torch's CPU dropout: a Bernoulli(1 - p) tensor divided by 1 - p, in memory order), so
    a seed keeps giving the masks, and the synthetic sets, of the (B, C, N, L) computation."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        if self.p == 1:
            return h * 0.0
        n, b, length, c = h.shape
        noise = torch.empty(b, c, n, length, dtype=h.dtype, device=h.device)
        noise.bernoulli_(1 - self.p).div_(1 - self.p)
        return h * noise.permute(2, 0, 3, 1)


def normalise_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """A + I, row-normalised: the propagation matrix of MTGNN's mix-hop layer."""
    adj = adj + torch.eye(adj.size(0), device=adj.device, dtype=adj.dtype)
    return adj / adj.sum(dim=1, keepdim=True)


def mix_hop(x: torch.Tensor, h: torch.Tensor, a_hat: torch.Tensor | SparseAdjacency,
            alpha: float) -> torch.Tensor:
    """alpha x + (1 - alpha) A_hat h for location-first x, h (N, ...): A_hat applied over axis 0,
    a single matrix product on the (N, rest) views (dense: one addmm)."""
    n = h.size(0)
    if isinstance(a_hat, SparseAdjacency):
        return alpha * x + (1 - alpha) * a_hat.propagate(h)
    out = torch.addmm(x.reshape(n, -1), a_hat, h.reshape(n, -1), beta=alpha, alpha=1 - alpha)
    return out.view(h.shape)


class MixProp(nn.Module):
    """Mix-hop propagation: h_k = a x + (1 - a) A_hat h_{k-1}, then a 1x1 MLP over [h_0..h_depth].

    ``a_hat`` is the already normalised adjacency (``normalise_adjacency``, MTGNN eq. 6-7), dense
    or as a ``SparseAdjacency`` (the same product from its nonzeros). x: (N, B, L, C).
    """

    def __init__(self, channels: int, depth: int, alpha: float):
        super().__init__()
        self.depth = depth
        self.alpha = alpha
        self.mlp = Pointwise((depth + 1) * channels, channels)

    def forward(self, x: torch.Tensor, a_hat: torch.Tensor | SparseAdjacency) -> torch.Tensor:
        h, hops = x, [x]
        for _ in range(self.depth):
            h = mix_hop(x, h, a_hat, self.alpha)
            hops.append(h)
        return self.mlp(torch.cat(hops, dim=-1))


class GraphLearner(nn.Module):
    """Uni-directional adjacency from two embeddings, top-k per row kept (MTGNN eq. 1-6)."""

    def __init__(self, node_dim: int, subgraph_size: int, alpha: float):
        super().__init__()
        self.lin1 = nn.Linear(node_dim, node_dim)
        self.lin2 = nn.Linear(node_dim, node_dim)
        self.subgraph_size = subgraph_size
        self.alpha = alpha

    def forward(self, e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
        m1 = torch.tanh(self.alpha * self.lin1(e1))
        m2 = torch.tanh(self.alpha * self.lin2(e2))
        adj = F.relu(torch.tanh(self.alpha * (m1 @ m2.T - m2 @ m1.T)))
        k = min(self.subgraph_size, adj.size(0))
        scores = adj.detach()
        if self.training:
            # Tie-breaking noise as in MTGNN, training mode only. It comes from the default torch
            # generator (like dropout), so it is reproducible under the trainer's torch.manual_seed.
            scores = scores + 0.01 * torch.rand_like(scores)
        mask = torch.zeros_like(adj).scatter_(1, scores.topk(k, dim=1).indices, 1.0)
        return adj * mask


class LocationEncoder(nn.Module):
    """STemDist location encoder (paper eq. 4-5): E = Linear2(LayerNorm(H1 + SelfAttn(H1))).

    H1 = Linear1(I) with I the (N, L_in * C) flattened window means. ``relu=True`` adds the ReLU
    that the reference code puts after Linear1 (reference note 3.5); the paper's eq. 4 has none.
    """

    def __init__(self, in_features: int, hidden: int, out_features: int, relu: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(in_features, hidden)
        self.relu = relu
        self.attn = nn.MultiheadAttention(hidden, num_heads=1, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.linear2 = nn.Linear(hidden, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h1 = self.linear1(features)
        if self.relu:
            h1 = F.relu(h1)
        return self.linear2(self.norm(h1 + self.self_attention(h1)))

    def self_attention(self, h: torch.Tensor) -> torch.Tensor:
        """Eq. 5 written out with the attention module's weights: softmax(Q K^T / sqrt(d)) V W_O.

        Computed explicitly rather than through the fused kernel, whose CPU backward has no
        derivative of its own: gradient matching differentiates through gradients (double backward).
        """
        q, k, v = F.linear(h, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)
        alpha = torch.softmax(q @ k.T / q.shape[-1] ** 0.5, dim=-1)
        return self.attn.out_proj(alpha @ v)


class Block(nn.Module):
    """One MTGNN layer: gated dilated inception, skip, mix-hop with A and A^T, residual, norm."""

    def __init__(self, residual_channels: int, conv_channels: int, skip_channels: int,
                 dilation: int, length_out: int, gcn_depth: int, propalpha: float, dropout: float):
        super().__init__()
        self.filter = DilatedInception(residual_channels, conv_channels, dilation)
        self.gate = DilatedInception(residual_channels, conv_channels, dilation)
        self.dropout = LayoutDropout(dropout)
        self.skip = TimeCollapse(conv_channels, skip_channels, length_out)
        self.gconv1 = MixProp(conv_channels, gcn_depth, propalpha)
        self.gconv2 = MixProp(conv_channels, gcn_depth, propalpha)
        # Per-location LayerNorm over (channels, time): the STemDist modification (ref 3.4).
        self.norm = nn.LayerNorm((residual_channels, length_out))

    def forward(self, x: torch.Tensor, a_out: torch.Tensor,
                a_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, B, L, C) -> ((N, B, L', C), skip (N, B, S)); a_out, a_in: normalised A and A^T."""
        residual = x
        x = self.dropout(gated_inception(x, self.filter, self.gate))
        skip = self.skip(x)
        x = self.gconv1(x, a_out) + self.gconv2(x, a_in)
        x = x + residual[:, :, -x.size(2):]
        # the (C, L) LayerNorm of each (location, sample), on the (L, C) layout: parameters transposed
        norm = self.norm
        x = F.layer_norm(x, norm.normalized_shape[::-1], norm.weight.T, norm.bias.T, norm.eps)
        return x, skip


class _MTGNNBackbone(STModel, abc.ABC):
    """MTGNN backbone shared by both forms; subclasses supply the two node embeddings."""

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, gcn_depth: int = 2,
                 dropout: float = 0.3, subgraph_size: int = 20, node_dim: int = 10,
                 layers: int = 3, propalpha: float = 0.05, tanhalpha: float = 3.0,
                 conv_channels: int = 32, residual_channels: int = 32, skip_channels: int = 64,
                 end_channels: int = 128, dilation_exponential: int = 1, propagation: str = "auto"):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        if propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got {propagation!r}")
        self.propagation = propagation
        self.node_dim = node_dim
        kernel = max(KERNEL_SET)
        self.receptive_field = receptive_field(layers, kernel, dilation_exponential)
        self.seq_len = max(input_len, self.receptive_field)  # inputs are left-zero-padded to this

        self.graph = GraphLearner(node_dim, subgraph_size, tanhalpha)
        self.input_dropout = LayoutDropout(dropout)
        self.start_conv = Pointwise(in_channels, residual_channels)
        self.skip0 = TimeCollapse(in_channels, skip_channels, self.seq_len)
        lengths = [self.seq_len + 1 - receptive_field(j + 1, kernel, dilation_exponential)
                   for j in range(layers)]  # time steps left after each block (19 -> 13, 7, 1)
        self.blocks = nn.ModuleList(
            Block(residual_channels, conv_channels, skip_channels, dilation_exponential**j,
                  lengths[j], gcn_depth, propalpha, dropout)
            for j in range(layers)
        )
        self.skipE = TimeCollapse(residual_channels, skip_channels,
                                  self.seq_len - self.receptive_field + 1)
        self.end_conv_1 = nn.Conv2d(skip_channels, end_channels, 1)
        self.end_conv_2 = nn.Conv2d(end_channels, output_len * out_channels, 1)

    def sparse_propagation(self, n: int) -> bool:
        """Whether the mix-hop products on n locations go through the nonzeros only."""
        return self.propagation == "sparse" or (self.propagation == "auto" and n >= SPARSE_MIN_LOCATIONS)

    def twice_differentiable(self) -> _MTGNNBackbone:
        self.propagation = "dense"   # the sparse product has no double backward
        return self

    @abc.abstractmethod
    def node_embeddings(self, loc_input: torch.Tensor | None,
                        n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two (n, node_dim) embeddings feeding the graph learner (each form supplies its own)."""

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, c = x.shape
        if (length, c) != (self.input_len, self.in_channels):
            raise ValueError(f"expected input (B, {self.input_len}, N, {self.in_channels}), "
                             f"got {tuple(x.shape)}")
        adj = self.graph(*self.node_embeddings(loc_input, n))  # once per forward
        a_out, a_in = normalise_adjacency(adj), normalise_adjacency(adj.T)
        if self.sparse_propagation(n):
            a_out, a_in = SparseAdjacency(a_out), SparseAdjacency(a_in)

        x = F.pad(x.permute(2, 0, 1, 3), (0, 0, self.seq_len - length, 0))  # (N, B, seq_len, C)
        skip = self.skip0(self.input_dropout(x))   # (N, B, S)
        h = self.start_conv(x)
        for block in self.blocks:
            h, s = block(h, a_out, a_in)
            skip = skip + s
        skip = (skip + self.skipE(h)).permute(1, 2, 0).unsqueeze(-1)   # MTGNN's (B, S, N, 1)
        out = self.end_conv_2(F.relu(self.end_conv_1(F.relu(skip))))  # (B, L_out * C_out, N, 1)
        return out.reshape(b, self.output_len, self.out_channels, n).transpose(2, 3)


@MODELS.register("mtgnn", family="stgnn",
                 description="MTGNN with learned per-location embeddings (transductive)")
class MTGNN(_MTGNNBackbone):
    """MTGNN whose graph learner reads two nn.Embedding tables; only runs on its N locations.

    Ignores ``loc_input``. Hyperparameters and defaults follow the STemDist reference (ref 3.4):
    gcn_depth, dropout, subgraph_size (top-k), node_dim, layers, propalpha, tanhalpha, the channel
    widths (conv, residual, skip, end) and dilation_exponential.
    """

    inductive = False

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, **hyperparams):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len,
                         **hyperparams)
        self.emb1 = nn.Embedding(num_locations, self.node_dim)
        self.emb2 = nn.Embedding(num_locations, self.node_dim)

    def node_embeddings(self, loc_input, n):
        self.check_locations(n)
        return self.emb1.weight, self.emb2.weight


@MODELS.register("mtgnn-le", family="stgnn",
                 description="MTGNN with the STemDist location encoder (inductive)")
class MTGNNLE(_MTGNNBackbone):
    """MTGNN whose two node embeddings come from two independent STemDist location encoders.

    ``loc_input`` (N, L_in, C), the per-location mean of the normalised input windows (paper eq. 3),
    is required and flattened to (N, L_in * C). Extra hyperparameters: ``encoder_hidden`` (d, 32)
    and ``encoder_relu`` (False follows the paper's eq. 4; True adds the reference code's ReLU after
    Linear1). The rest are those of ``mtgnn``.
    """

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, encoder_hidden: int = 32,
                 encoder_relu: bool = False, **hyperparams):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len,
                         **hyperparams)
        features = input_len * in_channels
        self.encoder1 = LocationEncoder(features, encoder_hidden, self.node_dim, encoder_relu)
        self.encoder2 = LocationEncoder(features, encoder_hidden, self.node_dim, encoder_relu)

    def node_embeddings(self, loc_input, n):
        expected = (n, self.input_len, self.in_channels)
        if loc_input is None:
            raise ValueError("mtgnn-le needs loc_input (N, L_in, C): the per-location mean of the "
                             "normalised input windows (STemDist eq. 3)")
        if tuple(loc_input.shape) != expected:
            raise ValueError(f"loc_input must have shape {expected}, got {tuple(loc_input.shape)}")
        features = loc_input.reshape(n, -1)
        return self.encoder1(features), self.encoder2(features)
