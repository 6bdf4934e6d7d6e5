"""Least Confidence (Coleman et al. 2020; ST-Prune Appendix A.2): the windows of largest predictive variance.

The regression form of "least confident": the mean over outputs of the variance of the proxy's
stochastic forecasts (MC dropout, or an ensemble without dropout; ``uncertainty.py`` gives the
estimator and its cost). Unit weights; the subset is fixed in ``start``.
"""
from __future__ import annotations

from baselines.selection.uncertainty import UncertaintySelector, least_confidence_score
from stbench.registry import METHODS


@METHODS.register("least-confidence", family="selection",
                  description="static: windows of largest predictive variance (MC dropout / ensemble proxy)")
class LeastConfidence(UncertaintySelector):
    def score(self, samples):
        return least_confidence_score(samples)
