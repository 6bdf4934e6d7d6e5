"""Feature vectors the geometric coresets (K-Center, Herding) select on, built batch by batch.

* Window features (reference ``kcenter_sample.py`` / ``herding_sample.py``): each training window's
  normalised x (L_in, N, C) and normalised y (L_out, N, C_t), flattened: D = N (L_in C + L_out C_t).
* Location features (reference ``kcenter_sample.py``, the location side): each location's normalised
  x and y over all training windows, flattened: D = M (L_in C + L_out C_t).

Targets are scaled like the inputs (the scaler's target channels); unobserved readings are 0 in both
x and y (the training mean), as the window gatherer already does for x. The matrices are filled one
batch of windows at a time on ``train.series.device``, so the peak is the matrix plus one batch. When a
matrix would exceed ``max_gib`` it is built on a random subset (``ctx.rng``) of the other axis: window
features on a subset of locations, location features on a subset of windows. The reference keeps
everything: about 17 GB in float32 for LargeST-CA (~21k training windows x 8,600 locations x 24
values), which the default cap of 8 GiB halves.
"""
from __future__ import annotations

import numpy as np
import torch

from stbench.data.windows import Batch, WindowSet

GATHER_BYTES = 1 << 25   # gather ~32 MB of raw windows at a time


def _flat_parts(train: WindowSet, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, L_in C) normalised x and (B, N, L_out C_t) normalised y with unobserved targets at 0."""
    y = torch.where(batch.mask, train.series.scale_target(batch.y), 0.0)
    b, _, n, _ = batch.x.shape
    return batch.x.permute(0, 2, 1, 3).reshape(b, n, -1), y.permute(0, 2, 1, 3).reshape(b, n, -1)


def _batch_size(train: WindowSet) -> int:
    return max(1, GATHER_BYTES // (4 * train.series.spec.length * train.series.values[0].numel()))


def _per_location_width(train: WindowSet) -> int:
    spec, series = train.series.spec, train.series
    return spec.input_len * series.num_channels + spec.output_len * len(series.data.targets)


def _subset(total: int, keep: int, rng: np.random.Generator) -> np.ndarray | None:
    """All of ``total`` (None) when ``keep`` covers it, else ``keep`` sorted random ids."""
    return None if keep >= total else np.sort(rng.choice(total, size=keep, replace=False))


def iter_window_features(train: WindowSet, ids=None, locations: torch.Tensor | None = None):
    """Yield (B, D) blocks of window features (x then y per location, flattened) for ``ids``."""
    for batch in train.iter_batches(_batch_size(train), ids, locations):
        x, y = _flat_parts(train, batch)
        yield torch.cat([x, y], dim=2).reshape(x.shape[0], -1)


def window_features(train: WindowSet, rng: np.random.Generator, max_gib: float) -> torch.Tensor:
    """(M, D) window features; over ``max_gib`` only a random subset of locations is used."""
    m, n, width = len(train), train.series.num_locations, _per_location_width(train)
    keep = max(1, min(n, int(max_gib * 2**30) // (4 * m * width)))
    locations = _subset(n, keep, rng)
    if locations is not None:
        locations = torch.as_tensor(locations, device=train.series.device)
    out = torch.empty(m, keep * width, device=train.series.device)
    begin = 0
    for block in iter_window_features(train, locations=locations):
        out[begin:begin + block.shape[0]] = block
        begin += block.shape[0]
    return out


def location_features(train: WindowSet, rng: np.random.Generator, max_gib: float) -> torch.Tensor:
    """(N, M' (L_in C + L_out C_t)) location features; M' < M windows (random) only over ``max_gib``."""
    m, n, width = len(train), train.series.num_locations, _per_location_width(train)
    keep = max(1, min(m, int(max_gib * 2**30) // (4 * n * width)))
    ids = _subset(m, keep, rng)
    ids = np.arange(m) if ids is None else ids
    out = torch.empty(n, keep, width, device=train.series.device)
    begin = 0
    for batch in train.iter_batches(_batch_size(train), ids):
        x, y = _flat_parts(train, batch)
        out[:, begin:begin + x.shape[0]] = torch.cat([x, y], dim=2).transpose(0, 1)
        begin += x.shape[0]
    return out.reshape(n, -1)
