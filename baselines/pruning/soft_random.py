"""Soft Random (dynamic): a fresh uniform subset of round(r * n) samples every epoch, unit weights.

The ST-Prune paper's "Soft Random" baseline: unlike Hard Random, the subset is redrawn each epoch, so
every sample is seen over training; no loss rescaling.
"""
from __future__ import annotations

import numpy as np

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("soft-random", family="pruning", description="new random subset each epoch")
class SoftRandom(Pruner):
    def epoch(self, epoch: int, num_epochs: int):
        keep = max(1, round(self.budget.ratio * self.num_samples))
        return np.sort(self.ctx.rng.choice(self.num_samples, size=keep, replace=False)), None
