"""GraphCut (Iyer et al. 2021; ST-Prune Appendix A.2): greedy maximisation of a graph-cut function.

f(S) = sum_{i in V} sum_{j in S} s_ij - lam * sum_{i in S} sum_{j in S} s_ij: the selected windows are
similar to the whole training set (representative) and not to one another (diverse). The marginal gain
of window k is sum_i s_ik - lam * (2 sum_{j in S} s_jk + s_kk); greedy takes the largest gain (ties:
lowest id) until round(r n) are kept. This is DeepCore's ``GraphCut`` (gain lam' colsum_k - 2 sum_S
s_jk, i.e. lam = 1/lam' up to the constant s_kk) with its default lam = 1.

Similarity (DeepCore's ``cossim``): s_ij = (1 + cos(f_i, f_j)) / 2 in [0, 1] on ``features``,
default ``gradient`` (the proxy's last-layer gradients, as DeepCore's submodular selectors); the
proxy's ``embedding``, its ``prediction``s or the raw ``window``s are the alternatives (``proxy.py``).
With unit rows u_i the column sums are n/2 + u_k . (sum_i u_i)/2, so the greedy never forms the
n x n matrix: O(n) memory beyond the features and O(k n D) time (one matrix-vector product per pick).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector, check_features, cosine_unit
from stbench.registry import METHODS


def graph_cut_greedy(features: torch.Tensor, k: int, lam: float) -> list[int]:
    """Greedy picks (in order) maximising the graph cut with cosine similarities (module doc)."""
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"graph cut needs 1 <= k <= {n}, got k={k}")
    u = cosine_unit(features.float())
    colsum = 0.5 * n + 0.5 * (u @ u.sum(0)).double()
    diag = 0.5 + 0.5 * (u * u).sum(1).double()
    within = torch.zeros(n, dtype=torch.float64, device=u.device)   # sum_{j in S} s_jk
    chosen = torch.zeros(n, dtype=torch.bool, device=u.device)
    picks = []
    for _ in range(k):
        gain = (colsum - lam * (2 * within + diag)).masked_fill(chosen, -torch.inf)
        p = int(torch.argmax(gain))
        picks.append(p)
        chosen[p] = True
        within += 0.5 + 0.5 * (u @ u[p]).double()
    return picks


@METHODS.register("graphcut", family="selection",
                  description="static: greedy graph-cut submodular selection on proxy-gradient similarities")
class GraphCut(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        features: str = "gradient"   # gradient | embedding | prediction | window
        lam: float = 1.0             # weight of the within-set similarity (diversity)

        def __post_init__(self):
            super().__post_init__()
            check_features(self)
            checks.at_least(self, 0, "lam")

    def select(self, train, keep):
        feats = self.features(self.params.features, train)
        with self.phase("select"):
            return np.asarray(graph_cut_greedy(feats, keep, self.params.lam))
