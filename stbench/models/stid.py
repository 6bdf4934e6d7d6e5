"""STID (Shao et al., CIKM 2022, "Spatial-temporal identity: a simple yet effective baseline for
multivariate time series forecasting"), one of ST-Prune's cross-architecture backbones, in two forms.

- ``stid``: transductive; the spatial identity is a learned N x 32 table (Xavier-uniform).
- ``stid-le``: inductive; the spatial identity comes from the STemDist location encoder.

Architecture: each location's window (L_in x C values) is embedded by a linear layer
(a 1x1 convolution) to 32 dimensions, concatenated with the location's identity, passed through 3
residual MLP blocks (h + FC(Dropout(ReLU(FC(h)))), dropout 0.15) and a linear regression layer to
L_out * C_out. Locations do not interact: the identity is all a location knows of the others.
Hyperparameters: the original's (embed_dim 32, node_dim 32, num_layer 3).

Temporal identities (time-of-day and day-of-week tables, 32 dimensions each in the original) are
off: stbench models receive normalised values and no timestamps, so there is no index to look up
(the original's ``if_T_i_D=False, if_D_i_W=False``). Without them the hidden width is 64, not 128.

Parameters (1 input, 1 target channel, 12 in / 12 out): ``stid`` 26,156 + 32 N (series embedding
12 x 32 + 32, 3 blocks of 2 x (64 x 64 + 64), regression 64 x 12 + 12, identity 32 N), equal to the
original at the same settings; ``stid-le`` 26,156 + 5,760 (location encoder, d = 32) = 31,916 for any N.
The original at its PEMS04 defaults (temporal identities on, input_dim 3 with the time features,
307 locations) has 121,068.
"""
from __future__ import annotations

import torch
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import LocationVectors, check_input, heads_out
from stbench.registry import MODELS


class ResidualMLP(nn.Module):
    """h + FC2(Dropout(ReLU(FC1(h)))) with 1x1 convolutions over (B, D, N, 1)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.drop(torch.relu(self.fc1(h))))


class _STIDBackbone(STModel):
    encoder = False

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, embed_dim: int = 32, node_dim: int = 32,
                 num_layer: int = 3, dropout: float = 0.15, encoder_hidden: int = 32, encoder_relu: bool = False):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        self.identity = LocationVectors(num_locations, node_dim, input_len, in_channels, owner="stid",
                                        encoder=self.encoder, init="xavier", encoder_hidden=encoder_hidden,
                                        encoder_relu=encoder_relu)
        self.series_embedding = nn.Conv2d(input_len * in_channels, embed_dim, 1)
        hidden = embed_dim + node_dim
        self.encoder_layers = nn.Sequential(*(ResidualMLP(hidden, dropout) for _ in range(num_layer)))
        self.regression = nn.Conv2d(hidden, output_len * out_channels, 1)

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, c = check_input(self, x)
        series = x.transpose(1, 2).reshape(b, n, length * c).transpose(1, 2).unsqueeze(-1)   # (B, L C, N, 1)
        identity = self.identity(loc_input, n).T[None, :, :, None].expand(b, -1, -1, -1)    # (B, D, N, 1)
        h = torch.cat([self.series_embedding(series), identity], dim=1)
        return heads_out(self.regression(self.encoder_layers(h)), b, n, self.output_len, self.out_channels)


@MODELS.register("stid", family="mlp", description="STID: MLP with spatial identity embeddings (transductive)")
class STID(_STIDBackbone):
    """STID. Hyperparameters: embed_dim, node_dim, num_layer, dropout."""

    inductive = False


@MODELS.register("stid-le", family="mlp",
                 description="STID with the spatial identity from the STemDist location encoder (inductive)")
class STIDLE(_STIDBackbone):
    """STID whose spatial identities come from the STemDist location encoder; needs ``loc_input``.
    Extra hyperparameters: encoder_hidden (d = 32), encoder_relu."""

    inductive = True
    encoder = True
