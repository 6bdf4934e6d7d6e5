"""Random coreset: uniform windows without replacement; bi-dimensional with random locations too.

Temporal-only by default (round(rho * M) windows, all locations). With an explicit temporal x spatial
budget (``--budgets 0.005=0.1x0.05``) or ``bidimensional=True`` it keeps random windows x random
locations (the reference's ``random_sample2``), to be evaluated with an inductive model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS


@METHODS.register("random", family="coreset", description="uniform random windows (x random locations)")
class RandomCoreset(Condenser):
    @dataclass
    class Params:
        bidimensional: bool = False  # use the paper's temporal x spatial split even without an explicit one

    def is_bidimensional(self, budget) -> bool:
        return self.params.bidimensional or budget.temporal is not None

    def condense(self, train, budget, ctx) -> CondensedSet:
        bidim = self.is_bidimensional(budget)
        m, n = budget.sizes(len(train), train.series.num_locations, bidim)
        windows = np.sort(ctx.rng.choice(len(train), size=m, replace=False))
        locations = np.sort(ctx.rng.choice(train.series.num_locations, size=n, replace=False)) if bidim else None
        return CondensedSet(indices=windows, locations=locations)
