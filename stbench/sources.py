"""What the trainer trains on (a source of batches) and the fixed schedule of static sets.

A source answers ``batch(ids) -> (x, y_normalised, mask)`` and carries the location-encoder input
``loc_input`` (N', L_in, C) and optional ``location_weight`` (N',). A schedule answers
``epoch(e, E) -> (ids, weights)`` and ``update(ids, per_sample_loss)``; every ``Pruner`` is one.
"""
from __future__ import annotations

import numpy as np
import torch

from stbench.data.windows import WindowSet, to_device


class RealSource:
    """Real training windows (all, or a coreset's ids and locations)."""

    def __init__(self, train: WindowSet, window_ids: np.ndarray | None = None,
                 locations: np.ndarray | None = None):
        self.train = train
        self.window_ids = np.arange(len(train)) if window_ids is None else np.asarray(window_ids)
        self.locations = None if locations is None else torch.as_tensor(locations, device=train.series.device)
        self.location_weight = None
        self.loc_input = train.location_input(self.window_ids, self.locations)

    def __len__(self) -> int:
        return len(self.window_ids)

    def batch(self, ids: np.ndarray):
        b = self.train.batch(self.window_ids[ids], self.locations)
        return b.x, self.train.series.scale_target(b.y), b.mask


class SyntheticSource:
    """Synthetic windows held as tensors (normalised x and y, fully observed)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, location_weight: torch.Tensor | None):
        self.x, self.y = x.detach(), y.detach()
        self.location_weight = location_weight
        self.loc_input = self.x.mean(dim=0).permute(1, 0, 2).contiguous()

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, ids: np.ndarray):
        idx = to_device(ids, self.x.device, torch.long)
        y = self.y[idx]
        return self.x[idx], y, torch.ones_like(y, dtype=torch.bool)


def source_for(condensed, train: WindowSet):
    """The source for a CondensedSet: its synthetic tensors, or its coreset windows and locations."""
    device = train.series.device
    if condensed.x is not None:
        weight = None if condensed.location_weight is None else condensed.location_weight.to(device)
        return SyntheticSource(condensed.x.to(device), condensed.y.to(device), weight)
    source = RealSource(train, condensed.indices, condensed.locations)
    if condensed.location_weight is not None:
        source.location_weight = condensed.location_weight.to(device)
    return source


class FixedSchedule:
    """Every sample every epoch, with fixed weights (full data and static condensed sets)."""

    ignores_losses = True   # the trainer skips ``update`` (and its timing) for it

    def __init__(self, num_samples: int, weights: torch.Tensor | np.ndarray | None = None):
        self.ids = np.arange(num_samples)
        self.weights = None if weights is None else np.asarray(torch.as_tensor(weights).cpu(), dtype=np.float32)

    def epoch(self, epoch: int, num_epochs: int):
        return self.ids, self.weights

