"""FourierGNN (Yi et al., NeurIPS 2023, "FourierGNN: rethinking multivariate time series forecasting
from a pure graph perspective").

The N x L input values of a window are the nodes of one fully connected "hypervariate graph". Each
value is embedded into d = 128 dimensions (x * e, a learned 1 x d vector; with C input channels a
C x d matrix), the N L tokens (location-major, as in the original) are transformed with an
orthonormal real FFT, and K = 3 Fourier graph operators (FGOs) act in the frequency
domain: H_k = ReLU(H_{k-1} S_k + b_k) with complex d x d weights S_k (ReLU on the real and imaginary
parts), each output soft-shrunk (lambda = 0.01); their sum plus the input spectrum is transformed
back (inverse FFT). A learned L x 8 projection mixes each location's time steps and an MLP
(8 d -> 64 -> 256 -> L_out * C_out, LeakyReLU) predicts. The sum over FGO orders replaces the
N L x N L graph convolution of the hypervariate graph, so nothing N x N (or N L x N L) is formed.

Inductive as it is (STemDist Sec. V-C, footnote 4): no parameter depends on the number of locations,
so it trains on N' locations and predicts on N without a location encoder; ``loc_input`` is ignored.

Hyperparameters: the original's defaults (embed_size 128, hidden_size 256, three FGO layers,
sparsity_threshold 0.01, weights scaled by 0.02), as the STemDist reference uses them.
``diagonal=True`` reproduces the released code, whose ``einsum('bli,ii->bli', x, w)`` multiplies
by the diagonal of each S_k only (an elementwise complex scale; the STemDist reference inherits it);
the default follows the paper's full matrix product.

Parameters (1 input, 1 target channel, 12 in / 12 out): 184,620 for any N: embedding 128, FGOs
3 x (2 x 128 x 128 + 2 x 128), time projection 12 x 8, MLP 1024 x 64 + 64 + 64 x 256 + 256 + 256 x 12
+ 12; the original allocates exactly these tensors (184,620). With ``diagonal=True`` the unused
off-diagonal weights are not allocated: 87,084.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.base import STModel
from stbench.models.graph import check_input
from stbench.registry import MODELS


@MODELS.register("fouriergnn", family="stgnn",
                 description="FourierGNN: Fourier graph operators on the hypervariate graph (inductive)")
class FourierGNN(STModel):
    """FourierGNN; ``embed_size``, ``hidden_size``, ``layers``, ``sparsity_threshold``, ``scale``,
    ``projection`` (the 8 of the L x 8 time projection) and ``diagonal`` (see the module docstring)."""

    inductive = True

    def __init__(self, num_locations: int, in_channels: int, out_channels: int,
                 input_len: int = 12, output_len: int = 12, *, embed_size: int = 128, hidden_size: int = 256,
                 layers: int = 3, sparsity_threshold: float = 0.01, scale: float = 0.02, projection: int = 8,
                 diagonal: bool = False):
        super().__init__(num_locations, in_channels, out_channels, input_len, output_len)
        d = embed_size
        self.sparsity_threshold, self.diagonal = sparsity_threshold, diagonal
        self.embedding = nn.Parameter(torch.randn(in_channels, d))
        shape = (2, d) if diagonal else (2, d, d)    # real and imaginary parts
        self.weights = nn.ParameterList(nn.Parameter(scale * torch.randn(shape)) for _ in range(layers))
        self.biases = nn.ParameterList(nn.Parameter(scale * torch.randn(2, d)) for _ in range(layers))
        self.time_projection = nn.Parameter(torch.randn(input_len, projection))
        self.fc = nn.Sequential(
            nn.Linear(d * projection, 64), nn.LeakyReLU(),
            nn.Linear(64, hidden_size), nn.LeakyReLU(),
            nn.Linear(hidden_size, output_len * out_channels),
        )

    def _times(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return h * w if self.diagonal else h @ w

    def fourier_graph(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sum_k softshrink(H_k), H_k = ReLU(H_{k-1} S_k + b_k), H_0 the spectrum (real and imaginary parts)."""
        out_re, out_im = torch.zeros_like(re), torch.zeros_like(im)
        for w, b in zip(self.weights, self.biases):
            re, im = (F.relu(self._times(re, w[0]) - self._times(im, w[1]) + b[0]),
                      F.relu(self._times(im, w[0]) + self._times(re, w[1]) + b[1]))
            out_re = out_re + F.softshrink(re, self.sparsity_threshold)
            out_im = out_im + F.softshrink(im, self.sparsity_threshold)
        return out_re, out_im

    def forward(self, x: torch.Tensor, loc_input: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L_in, N, C) normalised input -> (B, L_out, N, C_out)."""
        b, length, n, c = check_input(self, x)
        tokens = x.transpose(1, 2).reshape(b, n * length, c) @ self.embedding      # (B, N L, d)
        spectrum = torch.fft.rfft(tokens, dim=1, norm="ortho")                     # (B, N L // 2 + 1, d)
        re, im = spectrum.real, spectrum.imag
        graph_re, graph_im = self.fourier_graph(re, im)
        h = torch.fft.irfft(torch.complex(re + graph_re, im + graph_im), n=n * length, dim=1, norm="ortho")
        h = h.reshape(b, n, length, -1)
        h = torch.einsum("bnld,lp->bndp", h, self.time_projection).reshape(b, n, -1)   # (B, N, d * 8)
        out = self.fc(h)                                                           # (B, N, L_out * C_out)
        return out.reshape(b, n, self.output_len, self.out_channels).transpose(1, 2)
