"""STGCN (Yu, Yin and Zhu, IJCAI 2018, "Spatio-temporal graph convolutional networks") in three forms.

- ``stgcn``: the STemDist form (STemDist Sec. V-C, footnote 4): the graph is learned with STemDist
  eq. 2, A = softmax(ReLU(E1 E2^T)) from two learned N x 10 tables (N(0, 1) initialised, as in the
  STemDist reference), instead of a predefined adjacency. Transductive.
- ``stgcn-le``: the same with E1 and E2 from two STemDist location encoders (as ``mtgnn-le``):
  trains on N' locations and predicts on any N.
- ``stgcn-adj``: STGCN as published, for datasets with a road graph: Chebyshev graph convolution on
  the scaled Laplacian of the dataset's adjacency (``uses_adjacency``: the runner passes it when the
  model trains on all locations; a dataset without one but with coordinates gives the thresholded
  Gaussian kernel of their distances, as STGCN's data preparation builds W, ``graph.predefined_graph``).
  With neither it falls back to the learned graph of ``stgcn``.

Architecture (the paper's Fig. 2; residual alignment, LayerNorm and output layer as in the
authors' TensorFlow code). Two ST-Conv blocks with channels 64, 16, 64 (the paper's experimental
settings): a temporal gated convolution (width Kt = 3, GLU (P + x) * sigmoid(Q), the input x aligned
to the output channels by zero padding or a 1x1 convolution), a spatial Chebyshev graph convolution
of order Ks = 3 (ReLU, residual), a temporal convolution (ReLU, residual), LayerNorm over (locations,
channels) of each time step; dropout 0 (the authors train with keep probability 1). Output layer: a
temporal GLU convolution over the Ko = L_in - 2 * blocks * (Kt - 1) = 4 remaining steps, LayerNorm, a
1x1 convolution with sigmoid, and a fully connected 1x1 convolution to L_out * C_out (the paper
predicts one step; like the STemDist reference it maps to all L_out steps at once, with one bias per
output instead of per location).

Graph operator. For a dataset adjacency W: L~ = 2 L / lambda_max - I (``graph.scaled_laplacian``).
For the learned A (row-stochastic): the random-walk Laplacian I - A with lambda_max taken as 2 gives
L~ = -A. Sum_k T_k(L~) x Theta_k is evaluated as Sum_k T_k(L~) (x Theta_k) by Clenshaw's recurrence,
so the graph products run on the 16 output channels instead of the 64 input channels (the same sum).
The learned A is one (N, N) matrix per forward, shared by the batch; nothing per sample is N x N.

LayerNorm affine: per (location, channel) as in the authors' code for ``stgcn`` and ``stgcn-adj``;
per channel for ``stgcn-le`` (a per-location scale cannot move to other locations; the statistics
are still taken over locations and channels).

Parameters at 12 in / 12 out, 1 input and 1 target channel, N locations: ``stgcn`` 77,548 + 404 N
(convolutions 77,548; three LayerNorms 3 x 128 N; E1, E2 20 N); ``stgcn-le``
77,548 + 3 x 128 + 2 x 5,034 (two location encoders) = 88,000 for any N; ``stgcn-adj`` with an
adjacency 77,548 + 384 N. The authors' TensorFlow STGCN with the paper's channels (its code defaults
to 32/64/128) has the same convolution and LayerNorm weights (temporal ``wt`` Kt x c_in x 2 c_out + 2
c_out, spatial ``ws`` Ks c_in x c_out + c_out, bottleneck ``ws_input`` 64 x 16 without bias) and a
one-step head: 76,832 + 385 N (64 weights + N biases instead of 64 x 12 + 12), no graph embeddings.
"""
from __future__ import annotations

import abc

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import (
    LocationVectors,
    check_input,
    chebyshev_sum,
    heads_out,
    learned_adjacency,
    scaled_laplacian,
)
from stbench.registry import MODELS


def over_locations(h: torch.Tensor, op: torch.Tensor) -> torch.Tensor:
    """(B, C, N, T) -> (B, C, N, T): (op h) over the location axis, op (N, N)."""
    return torch.einsum("mn,bcnt->bcmt", op, h)


def align_channels(x: torch.Tensor, c_out: int, conv: nn.Module | None) -> torch.Tensor:
    """The authors' residual input: a 1x1 convolution down to c_out, or zero padding up to it."""
    if conv is not None:
        return conv(x)
    return F.pad(x, (0, 0, 0, 0, 0, c_out - x.size(1))) if x.size(1) < c_out else x


class TemporalConv(nn.Module):
    """Width-Kt convolution along time: GLU (P + x) * sigmoid(Q), ReLU(conv + x) or sigmoid(conv)."""

    def __init__(self, c_in: int, c_out: int, kt: int, act: str):
        super().__init__()
        self.c_out, self.kt, self.act = c_out, kt, act
        self.conv = nn.Conv2d(c_in, 2 * c_out if act == "glu" else c_out, (1, kt))
        self.align = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in > c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, N, T) -> (B, C_out, N, T - Kt + 1)."""
        h = self.conv(x)
        if self.act == "sigmoid":
            return torch.sigmoid(h)
        residual = align_channels(x, self.c_out, self.align)[..., self.kt - 1:]
        if self.act == "glu":
            p, q = h.chunk(2, dim=1)
            return (p + residual) * torch.sigmoid(q)
        return F.relu(h + residual)


class ChebConv(nn.Module):
    """Spatial graph convolution (Chebyshev approximation): ReLU(sum_k T_k(L~) x Theta_k + b + x_aligned)."""

    def __init__(self, c_in: int, c_out: int, ks: int):
        super().__init__()
        self.c_out, self.ks = c_out, ks
        self.theta = nn.Conv2d(c_in, ks * c_out, 1, bias=False)   # Theta_0 .. Theta_{Ks-1}: Ks c_in x c_out
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.align = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in > c_out else None

    def forward(self, x: torch.Tensor, op) -> torch.Tensor:
        ys = list(self.theta(x).chunk(self.ks, dim=1))
        h = chebyshev_sum(ys, op) + self.bias.view(1, -1, 1, 1)
        return F.relu(h + align_channels(x, self.c_out, self.align))


class LayerNormNC(nn.Module):
    """The authors' layer_norm: statistics over (locations, channels) of each sample and time step."""

    def __init__(self, num_locations: int, channels: int, per_location: bool):
        super().__init__()
        shape = (num_locations, channels) if per_location else (channels,)
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(0, 3, 2, 1)                                    # (B, T, N, C)
        h = F.layer_norm(h, h.shape[-2:], eps=1e-6) * self.weight + self.bias
        return h.permute(0, 3, 2, 1)


class STConvBlock(nn.Module):
    """Temporal GLU conv -> Chebyshev graph conv -> temporal ReLU conv -> LayerNorm -> dropout."""

    def __init__(self, c_in: int, channels: tuple[int, int, int], kt: int, ks: int, num_locations: int,
                 per_location: bool, dropout: float):
        super().__init__()
        c_t, c_s, c_o = channels
        self.temporal1 = TemporalConv(c_in, c_t, kt, "glu")
        self.spatial = ChebConv(c_t, c_s, ks)
        self.temporal2 = TemporalConv(c_s, c_o, kt, "relu")
        self.norm = LayerNormNC(num_locations, c_o, per_location)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, op) -> torch.Tensor:
        return self.dropout(self.norm(self.temporal2(self.spatial(self.temporal1(x), op))))


class _STGCNBackbone(STModel, abc.ABC):
    """STGCN; subclasses supply the graph operator (a function h -> L~ h over locations)."""

    per_location_norm = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, kt: int = 3, ks: int = 3,
                 channels: tuple[int, int, int] = (64, 16, 64), blocks: int = 2, node_dim: int = 10,
                 dropout: float = 0.0):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        self.node_dim = node_dim
        ko = input_len - blocks * 2 * (kt - 1)
        if ko < 1:
            raise ValueError(f"STGCN with {blocks} blocks of kernel {kt} needs input_len > {input_len - ko}")
        per_location = self.per_location_norm
        self.blocks = nn.ModuleList(
            STConvBlock(in_channels if i == 0 else channels[2], tuple(channels), kt, ks, num_locations,
                        per_location, dropout)
            for i in range(blocks)
        )
        c = channels[2]
        self.out_temporal = TemporalConv(c, c, ko, "glu")
        self.out_norm = LayerNormNC(num_locations, c, per_location)
        self.out_sigmoid = TemporalConv(c, c, 1, "sigmoid")
        self.out_fc = nn.Conv2d(c, output_len * out_channels, 1)

    @abc.abstractmethod
    def operator(self, loc_input: torch.Tensor | None, n: int):
        """The graph operator h -> L~ h over the ``n`` locations of this forward pass."""

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, _, n, _ = check_input(self, x)
        op = self.operator(loc_input, n)
        h = x.permute(0, 3, 2, 1)                                    # (B, C, N, T)
        for block in self.blocks:
            h = block(h, op)
        h = self.out_sigmoid(self.out_norm(self.out_temporal(h)))   # (B, C, N, 1)
        return heads_out(self.out_fc(h), b, n, self.output_len, self.out_channels)


class _LearnedGraph(_STGCNBackbone):
    """L~ = -A with A = softmax(ReLU(E1 E2^T)) (STemDist eq. 2) from the two ``LocationVectors``."""

    encoder = False

    def __init__(self, num_locations, in_channels, out_channels, input_len=12, output_len=12, *,
                 encoder_hidden: int = 32, encoder_relu: bool = False, **hyperparams):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len, **hyperparams)
        self.emb1, self.emb2 = (
            LocationVectors(num_locations, self.node_dim, input_len, in_channels, owner="stgcn",
                            encoder=self.encoder, encoder_hidden=encoder_hidden, encoder_relu=encoder_relu)
            for _ in range(2))

    def adjacency(self, loc_input: torch.Tensor | None, n: int) -> torch.Tensor:
        """The learned (n, n) graph A of this forward."""
        return learned_adjacency(self.emb1(loc_input, n), self.emb2(loc_input, n))

    def operator(self, loc_input, n):
        adj = self.adjacency(loc_input, n)
        return lambda h: -over_locations(h, adj)


@MODELS.register("stgcn", family="stgnn",
                 description="STGCN with the STemDist learned graph (eq. 2) instead of a predefined one (transductive)")
class STGCN(_LearnedGraph):
    """STGCN, graph learned from two N x ``node_dim`` tables. Hyperparameters: kt, ks, channels (the
    three widths of an ST-Conv block), blocks, node_dim (R = 10, STemDist appendix C), dropout."""

    inductive = False


@MODELS.register("stgcn-le", family="stgnn",
                 description="STGCN with the STemDist learned graph from the location encoder (inductive)")
class STGCNLE(_LearnedGraph):
    """``stgcn`` whose E1, E2 come from two STemDist location encoders; needs ``loc_input``.
    Extra hyperparameters: encoder_hidden (d = 32), encoder_relu."""

    inductive = True
    encoder = True
    per_location_norm = False


@MODELS.register("stgcn-adj", family="stgnn",
                 description="STGCN as published: Chebyshev convolution on the dataset's adjacency (transductive)")
class STGCNAdj(_STGCNBackbone):
    """STGCN on the scaled Laplacian of ``adjacency`` (N, N: the dataset's, or the Gaussian kernel of its
    coordinates); without one, the learned graph of ``stgcn``."""

    inductive = False
    uses_adjacency = True

    def __init__(self, num_locations, in_channels, out_channels, input_len=12, output_len=12, *,
                 adjacency=None, **hyperparams):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len, **hyperparams)
        laplacian = None
        if adjacency is not None:
            laplacian = scaled_laplacian(adjacency)
            if laplacian.shape != (num_locations, num_locations):
                raise ValueError(f"adjacency must be ({num_locations}, {num_locations}), got {tuple(laplacian.shape)}")
        self.register_buffer("laplacian", laplacian)
        self.emb1 = self.emb2 = None
        if laplacian is None:
            self.emb1, self.emb2 = (LocationVectors(num_locations, self.node_dim, input_len, in_channels,
                                                    owner="stgcn") for _ in range(2))

    def operator(self, loc_input, n):
        if self.laplacian is None:
            adj = learned_adjacency(self.emb1(loc_input, n), self.emb2(loc_input, n))
            return lambda h: -over_locations(h, adj)
        self.check_locations(n)
        return lambda h: over_locations(h, self.laplacian)
