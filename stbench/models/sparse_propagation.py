"""Graph propagation A_hat @ h by the nonzeros of A_hat, for MTGNN's top-k graphs on many locations.

MTGNN keeps k = 20 entries per row of its learned adjacency, so at N = 1,617 locations (ERA5-UK) the
normalised matrix A_hat = (A + I) / rowsum is about 1.3% dense, yet the dense product costs N^2 per
feature column. This module computes the same product from the nonzeros only. Measured on a 2-core
CPU (benchmarks/batch_cost.py, batch 64, 1,617 locations): a training step takes 41 s instead of 52 s,
and a synthetic-weather epoch on 2,025 locations 1.04 s instead of 2.52 s. The CSR product is
memory-bound (each row of h is read about k times), so the convolutions now dominate the step.

It is exact, not an approximation: an entry outside the pattern is 0 in A_hat and, being masked (or
cut by the ReLU) before normalisation, receives no gradient in the dense computation either. Only
the summation order differs, so results agree with the dense product to float rounding.

The backward pass uses a sampled dense-dense product (only the N x k needed entries of
grad @ h^T) and the transposed sparse matrix. It is once-differentiable: gradient- and trajectory-
matching methods, which differentiate through a gradient, switch a model to the dense product with
``STModel.twice_differentiable()``.
"""
from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable


def _csr_tensor(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    with warnings.catch_warnings():   # torch flags CSR support as beta on every construction
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, (n, n), check_invariants=False)


def _crow(rows: torch.Tensor, n: int) -> torch.Tensor:
    """CSR row pointers for row indices sorted ascending."""
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


class SparseAdjacency:
    """A square propagation matrix kept as (values, CSR pattern) with ``values`` differentiable."""

    def __init__(self, dense: torch.Tensor):
        n = dense.size(0)
        rows, cols = (dense.detach() != 0).nonzero(as_tuple=True)   # row-major, so CSR order
        self.n = n
        self.values = dense[rows, cols]
        self.cols = cols
        self.crow = _crow(rows, n)
        # The transpose's pattern, and where each of its entries sits in ``values``.
        self.t_order = torch.argsort(cols * n + rows)
        self.t_cols = rows[self.t_order]
        self.t_crow = _crow(cols[self.t_order], n)

    def csr(self, values: torch.Tensor) -> torch.Tensor:
        return _csr_tensor(self.crow, self.cols, values, self.n)

    def csr_transposed(self, values: torch.Tensor) -> torch.Tensor:
        return _csr_tensor(self.t_crow, self.t_cols, values[self.t_order], self.n)

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (N, ...): the product A_hat @ h over the leading (location) axis."""
        out = _CSRMatmul.apply(self.values, self, h.reshape(self.n, -1))
        return out.view(h.shape)


class _CSRMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, adjacency: SparseAdjacency, h):
        ctx.adjacency = adjacency
        ctx.save_for_backward(values, h)
        return adjacency.csr(values) @ h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        values, h = ctx.saved_tensors
        adjacency = ctx.adjacency
        grad_values = grad_h = None
        if ctx.needs_input_grad[0]:   # d/dA_vw = <grad_v, h_w>, only on the pattern
            pattern = adjacency.csr(torch.zeros_like(values))
            grad_values = torch.sparse.sampled_addmm(pattern, grad.contiguous(), h.T, beta=0.0).values()
        if ctx.needs_input_grad[2]:
            grad_h = adjacency.csr_transposed(values) @ grad
        return grad_values, None, grad_h
