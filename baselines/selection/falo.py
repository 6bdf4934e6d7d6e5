"""FaLo, facility location (Iyer et al. 2021; ST-Prune Appendix A.2): greedy coverage of the training set.

F(S) = sum_{i in V} max_{j in S} s_ij: every training window is represented by its most similar kept
window ("facility points ... that cover different patterns"). Greedy with lazy evaluation (Minoux
1978; DeepCore's ``LazyGreedy``) takes the window of largest marginal gain until round(r n) are kept,
with CRAIG's blocked implementation (``baselines/coreset/craig.py::facility_location``; ties: lowest
id). Unlike CRAIG, whose weights are the facilities' cluster sizes, FaLo keeps unit weights (DeepCore's
``Submodular`` returns indices only).

Similarity (DeepCore's ``cossim``): s_ij = (1 + cos(f_i, f_j)) / 2 on ``features``, default
``gradient`` (proxy last-layer gradients, as DeepCore); ``embedding``, ``prediction`` or ``window``
instead (``proxy.py``). Memory O(n) plus one 64 MB similarity block; time O(n^2 D) for the initial
gains plus the lazy re-evaluations.
"""
from __future__ import annotations

from dataclasses import dataclass

from baselines.coreset.craig import facility_location
from baselines.selection.proxy import ProxyParams, StaticSelector, check_features
from stbench.registry import METHODS


@METHODS.register("falo", family="selection",
                  description="static: greedy facility location on proxy-gradient similarities")
class FacilityLocation(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        features: str = "gradient"   # gradient | embedding | prediction | window

        def __post_init__(self):
            super().__post_init__()
            check_features(self)

    def select(self, train, keep):
        feats = self.features(self.params.features, train)
        with self.phase("select"):
            picks, _ = facility_location(feats, keep, "cosine")
            return picks.cpu().numpy()
