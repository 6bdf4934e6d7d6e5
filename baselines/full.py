"""Full data: the "Original data" row. Every training window, every location, every epoch."""
from __future__ import annotations

import numpy as np

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("full", family="full", description="all training windows every epoch (Original data)")
class Full(Pruner):
    kind = "full"   # takes no budget: one run per seed

    def epoch(self, epoch: int, num_epochs: int):
        return np.arange(self.num_samples), None
