"""Hard Random (dynamic protocol, static choice): one uniform subset of round(r * n) samples, every epoch.

The ST-Prune paper's "Hard Random" baseline (Appendix A.2, "random selection before training"): the
subset is drawn once in ``start`` from the run's generator and never changes; unit weights.
"""
from __future__ import annotations

import numpy as np

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("hard-random", family="selection", description="one random subset for all epochs")
class HardRandom(Pruner):
    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        keep = max(1, round(budget.ratio * num_samples))
        self.ids = np.sort(ctx.rng.choice(num_samples, size=keep, replace=False))

    def epoch(self, epoch: int, num_epochs: int):
        return self.ids, None
