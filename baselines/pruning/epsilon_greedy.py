"""epsilon-greedy dynamic pruning (Raju, Daruwalla & Lipasti 2021), adapted to regression losses.

Each sample's score is an exponential moving average of its training loss, the trainer's per-sample
masked mean error (MAE or MSE as the run is configured): s <- decay * s + (1 - decay) * loss, the
first observation taken as is. Every epoch keeps exactly round(r * n) samples: the
round((1 - epsilon) * budget) highest-scored ones (exploitation) and the rest uniformly at random from
the others (exploration); unit weights. Unseen samples score +inf, so the greedy part first sweeps
the data; ties are broken at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("epsilon-greedy", family="pruning",
                  description="top (1-eps) of the budget by EMA loss, the rest at random")
class EpsilonGreedy(Pruner):
    @dataclass
    class Params:
        epsilon: float = 0.1   # exploration share of the budget
        decay: float = 0.9     # EMA factor of the loss score

        def __post_init__(self):
            if not 0 <= self.epsilon <= 1:
                raise ValueError(f"epsilon must be in [0, 1] (got {self.epsilon})")
            if not 0 <= self.decay < 1:
                raise ValueError(f"decay must be in [0, 1) (got {self.decay})")

    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        self.scores = np.full(num_samples, np.inf)
        self.keep = max(1, round(budget.ratio * num_samples))

    def epoch(self, epoch: int, num_epochs: int):
        greedy = round((1 - self.params.epsilon) * self.keep)
        ranked = np.lexsort((self.ctx.rng.random(self.num_samples), -self.scores))
        explore = self.ctx.rng.choice(ranked[greedy:], size=self.keep - greedy, replace=False)
        return np.sort(np.concatenate([ranked[:greedy], explore])), None

    def update(self, ids: np.ndarray, per_sample_loss: torch.Tensor) -> None:
        ids = np.asarray(ids)
        loss = per_sample_loss.detach().cpu().double().numpy()
        old = self.scores[ids]
        self.scores[ids] = np.where(np.isfinite(old), self.params.decay * old + (1 - self.params.decay) * loss, loss)
