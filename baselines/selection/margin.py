"""Margin (Coleman et al. 2020; ST-Prune Appendix A.2): the windows with the widest prediction intervals.

A classifier's margin (the gap between its two top probabilities; a small gap is uncertain) becomes,
for a forecaster, the width of the central ``coverage`` prediction interval of each output, from the
empirical quantiles of the proxy's stochastic forecasts, averaged over outputs; the widest intervals
(the least decided forecasts) are kept (``uncertainty.py``). Unit weights; the subset is fixed in ``start``.
"""
from __future__ import annotations

from dataclasses import dataclass

from baselines.distill import checks
from baselines.selection.uncertainty import UncertaintySelector, margin_score
from stbench.registry import METHODS


@METHODS.register("margin", family="selection",
                  description="static: windows with the widest empirical prediction intervals")
class Margin(UncertaintySelector):
    @dataclass
    class Params(UncertaintySelector.Params):
        coverage: float = 0.9   # the central interval: quantiles (1 - coverage)/2 and (1 + coverage)/2

        def __post_init__(self):
            super().__post_init__()
            checks.between(self, "coverage", 0.0, 1.0, low_open=True, high_open=True)

    def score(self, samples):
        return margin_score(samples, self.params.coverage)
