"""K-Center coresets: greedy farthest-first traversal (Gonzalez 1985; Sener & Savarese 2018, Alg. 1).

* ``kcenter``: K-Center on window features (normalised x and y, flattened; ``features.py``), keeping
  round(rho M) windows and every location (the paper's Table III coreset row).
* ``stemdist-kcenter``: the paper's STemDist-K-Center, bi-dimensional. K-Center on window features
  picks the windows and, separately, K-Center on location features (each location's series over all
  windows) picks the locations; the sizes come from the temporal x spatial split of the budget and the
  set is evaluated with the location-encoder MTGNN (reference ``kcenter_sample.py``).

Each first centre is drawn uniformly with ``ctx.rng``, as the reference draws it at random.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.coreset.features import location_features, window_features
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS


def _sq_dist_to(features: torch.Tensor, sq_norms: torch.Tensor, j: int) -> torch.Tensor:
    """(M,) squared Euclidean distances of every row to row j (one matrix-vector product)."""
    return (sq_norms - 2 * (features @ features[j]) + sq_norms[j]).clamp_min(0)


def kcenter_greedy(features: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """``k`` row ids of ``features`` (M, D), starting at ``first``; each next centre is the row farthest
    from its nearest chosen centre (Sener & Savarese 2018, Alg. 1). A running min-distance vector keeps
    memory at O(M) beyond the features and time at O(M k D); ties go to the lowest id.
    """
    m = features.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"K-Center needs 1 <= k <= {m}, got k={k}")
    sq_norms = features.pow(2).sum(dim=1)
    chosen = [int(first)]
    nearest = _sq_dist_to(features, sq_norms, first)
    nearest[first] = -torch.inf   # chosen rows are never picked again, even among duplicates
    for _ in range(k - 1):
        pick = int(torch.argmax(nearest))
        chosen.append(pick)
        nearest = torch.minimum(nearest, _sq_dist_to(features, sq_norms, pick))
        nearest[pick] = -torch.inf
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


def _select(features: torch.Tensor, k: int, rng: np.random.Generator) -> np.ndarray:
    first = int(rng.integers(features.shape[0]))
    return kcenter_greedy(features, k, first).cpu().numpy()


@dataclass
class _Params:
    feature_gib: float = 8.0   # cap on a feature matrix; above it features.py subsamples the other axis

    def __post_init__(self):
        if not self.feature_gib > 0:
            raise ValueError(f"feature_gib must be > 0 (got {self.feature_gib})")


@METHODS.register("kcenter", family="coreset", description="K-Center (farthest-first) on windows")
class KCenter(Condenser):
    Params = _Params

    def condense(self, train, budget, ctx) -> CondensedSet:
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        features = window_features(train, ctx.rng, self.params.feature_gib)
        return CondensedSet(indices=_select(features, m, ctx.rng))


@METHODS.register("stemdist-kcenter", family="stemdist-variant",
                  description="K-Center on windows and, separately, on locations (bi-dimensional)")
class STemDistKCenter(Condenser):
    Params = _Params
    bidimensional = True

    def condense(self, train, budget, ctx) -> CondensedSet:
        m, n = budget.sizes(len(train), train.series.num_locations, bidimensional=True)
        windows = _select(window_features(train, ctx.rng, self.params.feature_gib), m, ctx.rng)
        locations = _select(location_features(train, ctx.rng, self.params.feature_gib), n, ctx.rng)
        return CondensedSet(indices=windows, locations=locations)
