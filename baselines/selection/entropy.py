"""Entropy (Coleman et al. 2020; ST-Prune Appendix A.2): the windows of largest predictive entropy.

The entropy of the proxy's predictive distribution, each output Gaussian with the variance of the
proxy's stochastic forecasts: sum over outputs of 0.5 log(2 pi e var) (``uncertainty.py``). Unit
weights; the subset is fixed in ``start``.
"""
from __future__ import annotations

from baselines.selection.uncertainty import UncertaintySelector, entropy_score
from stbench.registry import METHODS


@METHODS.register("entropy", family="selection",
                  description="static: windows of largest Gaussian predictive entropy (MC dropout / ensemble)")
class Entropy(UncertaintySelector):
    def score(self, samples):
        return entropy_score(samples)
