"""Graph WaveNet (Wu et al., IJCAI 2019), the ST-Prune paper's default backbone.

Blocks x layers of: a gated temporal convolution (tanh(filter) * sigmoid(gate), kernel 2, dilations
1, 2, 1, 2, ...), a 1x1 skip convolution summed over layers, a diffusion graph convolution (paper
eq. 6: order-K powers of every support applied to the signal, concatenated with it, mixed by a 1x1
convolution, dropout), a residual connection and BatchNorm. The supports are the adaptive adjacency
softmax(relu(E1 E2^T)) (eq. 5; two learned N x node_dim tables, so the model is transductive) and,
when the runner passes a predefined graph, its forward and backward transition matrices (row-normalised
A and A^T; a node without edges keeps a zero row). The runner passes ``adjacency`` to models with
``uses_adjacency = True``: the dataset's, else the Gaussian kernel of its coordinates (as Graph WaveNet's
METR-LA graph was built from road distances), else none (adaptive adjacency only); ``graph_source``
in the record says which. Inputs shorter than the receptive field (13 steps by default) are
left-padded with zeros; the output head, ReLU -> 1x1 conv -> ReLU -> conv, maps the remaining time
steps to (B, L_out, N, C_out). Tensors inside are laid out (B, C, N, L).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.registry import MODELS


def transition(adj: torch.Tensor) -> torch.Tensor:
    """Row-normalised adjacency D^-1 A (rows without edges stay zero)."""
    degree = adj.sum(dim=1, keepdim=True)
    return torch.where(degree > 0, adj / degree.clamp(min=1e-12), torch.zeros_like(adj))


class DiffusionConv(nn.Module):
    """Eq. 6: h = W [x, P_1 x, ..., P_1^K x, ..., P_S^K x] with a 1x1 convolution W, then dropout."""

    def __init__(self, c_in: int, c_out: int, num_supports: int, order: int, dropout: float):
        super().__init__()
        self.order = order
        self.mlp = nn.Conv2d((order * num_supports + 1) * c_in, c_out, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, supports: list[torch.Tensor]) -> torch.Tensor:
        hops = [x]
        for p in supports:
            h = x
            for _ in range(self.order):
                h = torch.einsum("bcvl,vw->bcwl", h, p)
                hops.append(h)
        return self.dropout(self.mlp(torch.cat(hops, dim=1)))


class Layer(nn.Module):
    """One Graph WaveNet layer: gated TCN, skip output, diffusion convolution, residual, BatchNorm.

    The last layer only feeds the skip sum, so it is built without the graph part (``graph=False``);
    the original builds it anyway and never uses its output. The skip convolution runs only on the
    last ``keep`` time steps, the ones the output head reads (the original convolves every step and
    crops later): the same output, about 18% faster per training step on CHARGED-SPO.
    """

    def __init__(self, residual: int, dilation_channels: int, skip: int, kernel: int, dilation: int,
                 num_supports: int, order: int, dropout: float, graph: bool = True):
        super().__init__()
        self.filter = nn.Conv2d(residual, dilation_channels, (1, kernel), dilation=(1, dilation))
        self.gate = nn.Conv2d(residual, dilation_channels, (1, kernel), dilation=(1, dilation))
        self.skip = nn.Conv2d(dilation_channels, skip, 1)
        self.gconv = DiffusionConv(dilation_channels, residual, num_supports, order, dropout) if graph else None
        self.norm = nn.BatchNorm2d(residual) if graph else None

    def forward(self, x: torch.Tensor, supports: list[torch.Tensor],
                keep: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, C, N, L) -> ((B, C, N, L - dilation * (kernel - 1)) or None, skip (B, S, N, keep))."""
        h = torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x))
        skip = self.skip(h[..., -keep:])
        if self.gconv is None:
            return None, skip
        h = self.gconv(h, supports) + x[..., -h.size(3):]
        return self.norm(h), skip


@MODELS.register("gwnet", family="stgnn",
                 description="Graph WaveNet: gated TCN + diffusion GCN with adaptive adjacency (transductive)")
class GWNet(STModel):
    """Graph WaveNet with the original defaults: 4 blocks x 2 layers, kernel 2, channels 32/32/256/512,
    node_dim 10, diffusion order 2, dropout 0.3. ``adjacency`` (N, N) adds the two transition supports.
    """

    inductive = False
    uses_adjacency = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, adjacency=None, blocks: int = 4,
                 layers: int = 2, kernel: int = 2, residual_channels: int = 32, dilation_channels: int = 32,
                 skip_channels: int = 256, end_channels: int = 512, node_dim: int = 10, order: int = 2,
                 dropout: float = 0.3):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        dilations = [2 ** j for _ in range(blocks) for j in range(layers)]
        self.receptive_field = 1 + (kernel - 1) * sum(dilations)
        self.seq_len = max(input_len, self.receptive_field)
        transitions = None
        if adjacency is not None:
            adj = torch.as_tensor(adjacency, dtype=torch.float32)
            if adj.shape != (num_locations, num_locations):
                raise ValueError(f"adjacency must be ({num_locations}, {num_locations}), got {tuple(adj.shape)}")
            transitions = torch.stack([transition(adj), transition(adj.T)])
        self.register_buffer("transitions", transitions)
        num_supports = 1 if adjacency is None else 3
        self.node_emb1 = nn.Parameter(torch.randn(num_locations, node_dim))
        self.node_emb2 = nn.Parameter(torch.randn(num_locations, node_dim))
        self.start_conv = nn.Conv2d(in_channels, residual_channels, 1)
        self.layers = nn.ModuleList(
            Layer(residual_channels, dilation_channels, skip_channels, kernel, d, num_supports, order, dropout,
                  graph=i < len(dilations) - 1)
            for i, d in enumerate(dilations)
        )
        self.end_conv_1 = nn.Conv2d(skip_channels, end_channels, 1)
        self.end_conv_2 = nn.Conv2d(end_channels, output_len * out_channels,
                                    (1, self.seq_len - self.receptive_field + 1))

    def supports(self) -> list[torch.Tensor]:
        """Fixed transition matrices (if any) and the adaptive adjacency (eq. 5)."""
        adaptive = F.softmax(F.relu(self.node_emb1 @ self.node_emb2.T), dim=1)
        fixed = [] if self.transitions is None else list(self.transitions)
        return fixed + [adaptive]

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out); ignores ``loc_input``."""
        b, length, n, c = x.shape
        if (length, c) != (self.input_len, self.in_channels):
            raise ValueError(f"expected input (B, {self.input_len}, N, {self.in_channels}), got {tuple(x.shape)}")
        self.check_locations(n)
        supports = self.supports()
        h = self.start_conv(F.pad(x.permute(0, 3, 2, 1), (self.seq_len - length, 0)))
        skip, keep = 0, self.seq_len - self.receptive_field + 1   # time steps the output head reads
        for layer in self.layers:
            h, s = layer(h, supports, keep)
            skip = skip + s
        out = self.end_conv_2(F.relu(self.end_conv_1(F.relu(skip))))   # (B, L_out * C_out, N, 1)
        return out.reshape(b, self.output_len, self.out_channels, n).transpose(2, 3)
