"""Helpers shared by the temporal-only distillation baselines (no registration here).

Real windows come out of ``WindowSet.batch`` with x normalised and y in raw units; every helper here
returns y normalised with ``series.scale_target`` so that real and synthetic targets share units.
"""
from __future__ import annotations

import numpy as np
import torch

# Real mini-batch sizes for DC-style matching (STemDist online appendix D), by dataset name.
DATASET_BATCH = {"gba": 128, "gla": 64, "era5": 64, "ca": 32, "cams": 32}


def real_batch(train, ids, locations=None):
    """(x normalised, y normalised, mask) of training windows ``ids``."""
    b = train.batch(ids, locations)
    return b.x, train.series.scale_target(b.y), b.mask


def matching_batch_size(train, ctx, override: int = 0) -> int:
    """``override``, else the appendix's size for the dataset (by ``meta['name']``), else half the
    dataset's training batch size (the appendix halves it where memory required), else 64."""
    if override:
        size = override
    else:
        name = str(train.series.data.meta.get("name", "")).lower()
        size = DATASET_BATCH.get(name) or max(1, ctx.dataset_defaults.get("batch_size", 128) // 2)
    return max(1, min(size, len(train)))


def sample_ids(ctx, n: int, size: int) -> np.ndarray:
    return ctx.rng.choice(n, size=min(size, n), replace=False)


def init_from_real(train, m: int, ctx):
    """M random real windows (sorted ids): x normalised, y normalised with unobserved targets set to
    0 (the training mean), both on ``ctx.device``."""
    ids = np.sort(ctx.rng.choice(len(train), size=m, replace=False))
    x, y, mask = real_batch(train, ids)
    return x.to(ctx.device), y.masked_fill(~mask, 0.0).to(ctx.device), ids


def temporal_synthetic_set(train, budget, ctx, learn_y: bool = True):
    """The temporal-only synthetic set of DC, DM and Frepo: ``budget``'s share of the windows over all
    locations, initialised from random real windows (``init_from_real``), as leaf tensors to optimise.
    Returns (x_s, y_s, init_ids, N); y_s requires grad only with ``learn_y``."""
    m_s, n = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
    x0, y0, init_ids = init_from_real(train, m_s, ctx)
    return x0.clone().requires_grad_(True), y0.clone().requires_grad_(learn_y), init_ids, n


def masked_mse(pred, y, mask) -> torch.Tensor:
    m = mask.to(pred.dtype)
    return (((pred - y) ** 2) * m).sum() / m.sum().clamp(min=1)


class FeatureHook:
    """Captures the input of a model's last layer (``end_conv_2``: MTGNN's penultimate features,
    (B, end_channels, N, 1)); models without that layer fall back to their output."""

    def __init__(self, model):
        self.model, self.features = model, None
        layer = getattr(model, "end_conv_2", None)
        self.handle = None if layer is None else layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output):
        self.features = inputs[0]

    def __call__(self, x, loc_input=None) -> torch.Tensor:
        """(B, features) per window, flattened over locations."""
        out = self.model(x, loc_input)
        feats = out if self.handle is None else self.features
        return feats.reshape(feats.shape[0], -1)

    def remove(self):
        if self.handle is not None:
            self.handle.remove()
