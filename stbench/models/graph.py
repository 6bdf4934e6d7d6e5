"""Graphs and per-location vectors shared by the backbones.

- ``learned_adjacency``: STemDist eq. 2 (Graph WaveNet's and AGCRN's adaptive adjacency),
  A = softmax(ReLU(E1 E2^T)) row-wise, one (N, N) matrix shared by the whole batch.
- ``chebyshev_terms`` / ``chebyshev_sum``: T_k(S) x for a graph operator S given as a function that
  multiplies over the location axis, by the recurrence T_k = 2 S T_{k-1} - T_{k-2}; the powers of S
  are never formed (no N x N product, only products with the signal).
- ``scaled_laplacian``: STGCN's operator for a predefined graph, 2 L / lambda_max - I with
  L = I - D^-1/2 W D^-1/2 (the STGCN authors' ``scaled_laplacian``, lambda_max = 2).
- ``gaussian_kernel``: a graph from coordinates when a dataset has no adjacency: W_ij =
  exp(-(d_ij / sigma)^2) for great-circle distances d, sigma their standard deviation, entries under
  ``threshold`` set to 0 (the thresholded Gaussian kernel of DCRNN and STGCN's data preparation).
- ``predefined_graph``: the graph a model with ``uses_adjacency`` gets from the runner: the dataset's
  adjacency; without one, ``gaussian_kernel`` of its coordinates; without either none (the model then
  uses its learned graph). Records name the source (``graph_source``).
- ``LocationVectors``: the per-location vectors of a model, either a learned (N, dim) table
  (transductive) or the STemDist location encoder (paper eq. 3-5, ``mtgnn.LocationEncoder``) applied
  to ``loc_input`` (inductive: any number of locations).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stbench.models.mtgnn import LocationEncoder


def learned_adjacency(e1: torch.Tensor, e2: torch.Tensor) -> torch.Tensor:
    """(N, R), (N, R) -> (N, N): softmax(ReLU(E1 E2^T)) over each row (STemDist eq. 2)."""
    return F.softmax(F.relu(e1 @ e2.T), dim=1)


def chebyshev_terms(x: torch.Tensor, apply: Callable[[torch.Tensor], torch.Tensor],
                    order: int) -> list[torch.Tensor]:
    """[T_0 x, ..., T_{order-1} x] with T_0 = I, T_1 = S, T_k = 2 S T_{k-1} - T_{k-2}; ``apply(h)`` is S h."""
    terms = [x]
    if order > 1:
        terms.append(apply(x))
    for _ in range(2, order):
        terms.append(2 * apply(terms[-1]) - terms[-2])
    return terms


def chebyshev_sum(ys: list[torch.Tensor], apply: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum_k T_k(S) y_k by Clenshaw's recurrence: len(ys) - 1 products with S, on the y's channels."""
    if len(ys) == 1:
        return ys[0]
    b1, b2 = ys[-1], 0
    for y in reversed(ys[1:-1]):
        b1, b2 = y + 2 * apply(b1) - b2, b1
    return ys[0] + apply(b1) - b2


def scaled_laplacian(adj, lambda_max: float = 2.0) -> torch.Tensor:
    """(N, N) weighted adjacency -> 2 L / lambda_max - I, L = I - D^-1/2 W D^-1/2 (float32).

    A directed adjacency is symmetrised as (W + W^T) / 2 first. A location without edges keeps a zero
    row in D^-1/2 W D^-1/2 and in L, as in the STGCN authors' code. ``lambda_max`` = 2, the upper
    bound of the normalised Laplacian's spectrum (the STGCN code notes "lambda_max approx 2.0" before
    computing it with ARPACK, which takes minutes at thousands of locations; torch_geometric's
    ChebConv default), keeps the spectrum of the result in [-1, 1].
    """
    w = torch.as_tensor(np.asarray(adj), dtype=torch.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"adjacency must be square, got {tuple(w.shape)}")
    w = (w + w.T) / 2
    w = w - torch.diag(torch.diag(w))
    degree = w.sum(dim=1)
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    lap = torch.diag((degree > 0).to(w.dtype)) - inv_sqrt[:, None] * w * inv_sqrt[None, :]
    return (2 * lap / lambda_max - torch.eye(len(lap), dtype=w.dtype)).float()


def gaussian_kernel(coords, threshold: float = 0.1) -> np.ndarray:
    """(N, 2) latitude/longitude in degrees -> (N, N) thresholded Gaussian kernel of the distances.

    sigma is the standard deviation of all pairwise great-circle distances; the diagonal is 0.
    """
    lat, lon = (np.radians(np.asarray(coords, dtype=np.float64)[:, i]) for i in (0, 1))
    dlat, dlon = lat[:, None] - lat[None, :], lon[:, None] - lon[None, :]
    h = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    dist = 2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    sigma = dist.std() or 1.0
    w = np.exp(-((dist / sigma) ** 2))
    w[w < threshold] = 0.0
    np.fill_diagonal(w, 0.0)
    return w.astype(np.float32)


def predefined_graph(adj, coords) -> tuple[np.ndarray | None, str]:
    """(graph, source): ``adj`` ("dataset"), else the Gaussian kernel of ``coords`` ("gaussian-kernel"),
    else (None, "learned")."""
    if adj is not None:
        return adj, "dataset"
    if coords is not None:
        return gaussian_kernel(coords), "gaussian-kernel"
    return None, "learned"


class LocationVectors(nn.Module):
    """``dim``-dimensional vectors for the locations of a batch, learned or encoded.

    ``encoder=False``: an (num_locations, dim) parameter table (``init`` "normal": N(0, 1) as Graph
    WaveNet, AGCRN and the STemDist reference; "xavier": Xavier-uniform as STID and STAEformer), and
    only that many locations are accepted. ``encoder=True``: the STemDist location encoder maps
    ``loc_input`` (n, L_in, C), the per-location mean of the normalised input windows (eq. 3), to
    (n, dim) for any n (``encoder_hidden`` d = 32 in the paper; ``encoder_relu`` adds the reference
    code's ReLU after Linear1).
    """

    def __init__(self, num_locations: int, dim: int, input_len: int, in_channels: int, *, owner: str,
                 encoder: bool = False, init: str = "normal", encoder_hidden: int = 32,
                 encoder_relu: bool = False):
        super().__init__()
        self.num_locations, self.dim, self.owner = num_locations, dim, owner
        self.expected = (input_len, in_channels)
        if encoder:
            self.encoder = LocationEncoder(input_len * in_channels, encoder_hidden, dim, encoder_relu)
        else:
            self.encoder = None
            self.table = nn.Parameter(torch.empty(num_locations, dim))
            if init == "xavier":
                nn.init.xavier_uniform_(self.table)
            else:
                nn.init.normal_(self.table)

    def forward(self, loc_input: torch.Tensor | None, n: int) -> torch.Tensor:
        """(n, dim) vectors for the n locations of the batch."""
        if self.encoder is None:
            if n != self.num_locations:
                raise ValueError(f"{self.owner} is transductive: built for {self.num_locations} locations, got "
                                 f"{n}; use {self.owner}-le (STemDist location encoder) to train on fewer locations")
            return self.table
        expected = (n, *self.expected)
        if loc_input is None:
            raise ValueError(f"{self.owner}-le needs loc_input (N, L_in, C): the per-location mean of the "
                             "normalised input windows (STemDist eq. 3)")
        if tuple(loc_input.shape) != expected:
            raise ValueError(f"loc_input must have shape {expected}, got {tuple(loc_input.shape)}")
        return self.encoder(loc_input.reshape(n, -1))


def check_input(model, x: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, L, N, C) of ``x``, refusing another window length or channel count than the model's."""
    b, length, n, c = x.shape
    if (length, c) != (model.input_len, model.in_channels):
        raise ValueError(f"expected input (B, {model.input_len}, N, {model.in_channels}), got {tuple(x.shape)}")
    return b, length, n, c


def heads_out(out: torch.Tensor, b: int, n: int, output_len: int, out_channels: int) -> torch.Tensor:
    """(B, L_out * C_out, N, 1) head output -> (B, L_out, N, C_out)."""
    return out.reshape(b, output_len, out_channels, n).transpose(2, 3)
