"""Gradient-matching distance shared by DC and STemDist (no registration here).

DC (Zhao et al., ICLR 2021, eq. 10) compares two gradients layer by layer and, inside a layer, output
unit by output unit: d(A, B) = sum_i (1 - <A_i, B_i> / (|A_i| |B_i| + eps)), where A_i is the gradient
row of output unit i. Conv weights (out, in, kh, kw) become (out, in*kh*kw) rows, 3-D tensors
(d0, d1*d2); 2-D tensors are used as they are. DC's code gives 1-D tensors (biases, LayerNorm
scales) distance 0, and so does the STemDist reference; ``include_1d=True`` counts each 1-D tensor
as one row instead.
"""
from __future__ import annotations

import torch

EPS = 1e-6

# Gradient-matching loop sizes (T_outer, T_distill, T_model) per preset. The papers' setting (Sec. V-A of
# STemDist): T_distill 20, T_model 10, T_outer 200 for GBA/GLA (400 evaluation epochs) and 100 otherwise.
PRESET_LOOPS = {"smoke": (1, 2, 1), "quick": (5, 20, 10), "paper": (0, 20, 10)}


def loop_sizes(params, ctx) -> tuple[int, int, int]:
    """(T_outer, T_distill, T_model): the method's parameters where set (non-zero), else the preset's."""
    outer, distill, model = PRESET_LOOPS.get(ctx.preset, PRESET_LOOPS["quick"])
    if outer == 0:
        outer = 200 if ctx.dataset_defaults.get("paper_epochs", 100) >= 400 else 100
    return (params.outer_iterations or outer, params.distill_iterations or distill,
            params.model_epochs or model)


def _rows(g: torch.Tensor) -> torch.Tensor:
    return g.reshape(g.shape[0], -1) if g.dim() > 1 else g.reshape(1, -1)


def layerwise_cosine_distance(real: list[torch.Tensor], synthetic: list[torch.Tensor],
                              include_1d: bool = False) -> torch.Tensor:
    """Sum over parameter tensors and output rows of 1 - cosine(real row, synthetic row)."""
    total = synthetic[0].new_zeros(())
    for g_real, g_syn in zip(real, synthetic):
        if g_syn.dim() == 1 and not include_1d:
            continue
        a, b = _rows(g_real), _rows(g_syn)
        cosine = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
        total = total + (1 - cosine).sum()
    return total
