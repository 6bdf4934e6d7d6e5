"""A per-location MLP: a cheap inductive backbone for smoke tests and memory benchmarks.

Every location's flattened input window (L_in * C) goes through the same MLP (two hidden layers with
ReLU) to its flattened forecast (L_out * C_out). Locations never interact, so any N works.
"""
from __future__ import annotations

import torch
from torch import nn

from stbench.models.base import STModel
from stbench.registry import MODELS


@MODELS.register("mlp", family="mlp", description="per-location MLP shared across locations")
class MLP(STModel):
    """Shared per-location MLP; ``hidden`` is the width of both hidden layers; ignores loc_input."""

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, hidden: int = 64):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        self.net = nn.Sequential(
            nn.Linear(input_len * in_channels, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, output_len * out_channels),
        )

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) -> (B, L_out, N, C_out)."""
        b, _, n, _ = x.shape
        out = self.net(x.transpose(1, 2).reshape(b, n, -1))  # (B, N, L_out * C_out)
        return out.reshape(b, n, self.output_len, self.out_channels).transpose(1, 2)
