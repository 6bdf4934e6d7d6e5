"""UCB dynamic pruning (Raju, Daruwalla & Lipasti 2021), adapted to regression losses.

Each sample keeps an exponentially weighted mean m and variance v of its training loss (the
trainer's per-sample masked mean error, MAE or MSE as the run is configured): with d = loss - m,
m <- m + (1 - decay) * d and v <- decay * (v + (1 - decay) * d^2); the first observation sets m and
v = 0. Every epoch keeps the round(r * n) samples with the highest upper confidence bound
m + c * sqrt(v); unit weights. Unseen samples rank first (+inf), ties are broken at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("ucb", family="pruning", description="top of the budget by EMA loss + c * EMA std")
class UCB(Pruner):
    @dataclass
    class Params:
        c: float = 1.0         # weight of the loss standard deviation (exploration bonus)
        decay: float = 0.9     # EMA factor of the loss mean and variance

        def __post_init__(self):
            if not self.c >= 0:
                raise ValueError(f"c must be >= 0 (got {self.c})")
            if not 0 <= self.decay < 1:
                raise ValueError(f"decay must be in [0, 1) (got {self.decay})")

    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        self.mean = np.full(num_samples, np.inf)
        self.var = np.zeros(num_samples)
        self.keep = max(1, round(budget.ratio * num_samples))

    def bound(self) -> np.ndarray:
        """Upper confidence bound of every sample's loss (+inf for unseen samples)."""
        return self.mean + self.params.c * np.sqrt(self.var)

    def epoch(self, epoch: int, num_epochs: int):
        ranked = np.lexsort((self.ctx.rng.random(self.num_samples), -self.bound()))
        return np.sort(ranked[:self.keep]), None

    def update(self, ids: np.ndarray, per_sample_loss: torch.Tensor) -> None:
        ids = np.asarray(ids)
        loss = per_sample_loss.detach().cpu().double().numpy()
        seen = np.isfinite(self.mean[ids])
        diff = np.where(seen, loss - self.mean[ids], 0.0)
        step = 1 - self.params.decay
        self.mean[ids] = np.where(seen, self.mean[ids] + step * diff, loss)
        self.var[ids] = np.where(seen, self.params.decay * (self.var[ids] + step * diff ** 2), 0.0)
