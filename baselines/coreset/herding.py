"""Herding coreset (Welling 2009): greedily keep the running mean of the chosen features on the data mean.

Features are the windows' normalised x and y, flattened (``features.py``), as in the reference's
``herding_sample.py``. Step t picks, among windows not chosen yet, argmin_i ||(t+1) mu - (S_t + f_i)||
with mu the mean feature and S_t the sum of the t chosen ones, i.e. greedy minimisation of
||mu - mean of chosen|| (Chen, Welling & Smola 2010), as the reference and DeepCore implement it.
Welling's own rule, argmax_i <w_t, f_i> with w_t = w_0 + t mu - S_t and w_0 = mu, is the same argmin
without the ||f_i||^2 term, so the two agree when features have equal norms; windows' norms differ,
and the issue prescribes the distance form. Temporal-only: every location is kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.coreset.features import window_features
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` distinct row ids of ``features`` (M, D) in herding order; ties go to the lowest id.

    ||r - f_i||^2 with r = (t+1) mu - S_t is ranked as ||f_i||^2 - 2 r.f_i: one matrix-vector product
    per step, O(M k D) time and O(M) memory beyond the features.
    """
    m = features.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"herding needs 1 <= k <= {m}, got k={k}")
    mean = (features.sum(dim=0, dtype=torch.float64) / m).to(features.dtype)
    sq_norms = features.pow(2).sum(dim=1)
    taken = torch.zeros(m, dtype=torch.bool, device=features.device)
    total = torch.zeros_like(mean)
    chosen = []
    for t in range(k):
        score = (sq_norms - 2 * (features @ ((t + 1) * mean - total))).masked_fill(taken, torch.inf)
        pick = int(torch.argmin(score))
        chosen.append(pick)
        taken[pick] = True
        total += features[pick]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


@METHODS.register("herding", family="coreset", description="herding on windows (Welling 2009)")
class Herding(Condenser):
    @dataclass
    class Params:
        feature_gib: float = 8.0   # cap on the feature matrix; above it features.py subsamples locations

        def __post_init__(self):
            if not self.feature_gib > 0:
                raise ValueError(f"feature_gib must be > 0 (got {self.feature_gib})")

    def condense(self, train, budget, ctx) -> CondensedSet:
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        features = window_features(train, ctx.rng, self.params.feature_gib)
        return CondensedSet(indices=herding(features, m).cpu().numpy())
