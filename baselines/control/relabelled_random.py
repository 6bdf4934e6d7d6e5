"""Relabelled random: the control for expert-relabelled condensation (CondTSF, DATM's soft targets).

What it isolates. CondTSF moves a synthetic set's targets towards a frozen full-data expert's forecast;
DATM starts its targets from an expert's forecast. Is the gain over ``random`` the condensation, or
just the relabelling? This control keeps ``random``'s windows (the same budget, the same draw: the
first use of ``ctx.rng`` is ``random``'s ``np.sort(rng.choice(M, m, replace=False))``, so for a seed
it picks exactly ``random``'s windows) and applies only the relabelling of the named method
(``expert_of``), with the very expert buffers that method uses:

    Y <- (1 - s) Y + s f(X),        X the real input windows, untouched.

* ``f`` is the mean forecast of the final snapshots of the named method's expert buffers, built or
  loaded through MTT's machinery with the named method's own parameters, so the cache entry is the
  one that method uses (same key) and its cost is this method's too (built inside ``condense``, or
  charged as ``info["reused_setup_s"]`` when reused, as MTT and CondTSF do). ``condtsf``: MTT buffers
  of its ``model`` (default DLinear); ``datm``: its MTGNN buffers. CondTSF draws one expert uniformly
  at every plugin step and DATM one for its soft targets; the mean over the buffers is the expectation
  of those draws (and what CondTSF's many small steps average to), without adding a draw to the rng.
* ``s`` (``strength``) defaults to the named method's total relabelling at the run's preset: for
  ``condtsf`` k plugin steps of ratio beta, each shrinking the label error by (1 - beta), give
  s = 1 - (1 - beta)^k with k the iterations ``it`` of its backbone's loop where the plugin fires,
  (it + 1) % period == 0, i.e. iterations // period (the same in ``replace`` and ``add`` mode); for
  ``datm`` s = 1 with ``soft_targets`` (its targets start as the expert's forecast), else 0. An
  explicit ``strength`` in [0, 1] replaces it (the k-step rule holds with x fixed, as here; in CondTSF
  x moves between steps too, so it is the relabelling CondTSF applies, not an exact replay). ``info`` records ``strength``, ``plugin_steps`` (k)
  and the experts' provenance.
* The named method's parameters are those the grid resolves for it (the runner binds them into
  ``of_params``, so ``--set condtsf.beta=0.05`` changes the control alike, and they are part of the
  run's identity); without a binding, the named method's defaults.
* Targets of real windows that are missing are 0 in normalised units (the training mean) before the
  mix, as MTT's (and so CondTSF's) initial set has them; the set is synthetic tensors (x real, y
  relabelled), fully observed, trained like ``random``'s set (no training hints).
* ``info["real_inputs"]`` names the real windows, so ``--targets hard`` can put their real targets
  back (the runner checks that x are exactly those windows); the result is then ``random``'s set.

The record carries ``control_of`` (the named method) and the label source ``expert-relabelled``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks
from baselines.distill.matching import loop_sizes
from baselines.distill.mtt import MTT, RealView
from baselines.distill.synthetic import real_batch
from baselines.distill.trajectories import FlatModel
from baselines.timeseries.condtsf import _shell
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS

CONTROLLED = ("condtsf", "datm")


def expert_forecast(buffers: list, shell: torch.nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Mean forecast of the final snapshots of ``buffers`` on ``x`` (eval mode, no gradient)."""
    flat = FlatModel(shell)
    flat.model.eval()
    with torch.no_grad():
        total = None
        for traj in buffers:
            theta = traj[-1].to(x.device)
            out = torch.cat([flat(theta, xb, None) for xb in torch.split(x, chunk)])
            total = out if total is None else total + out
    return total / len(buffers)


def condtsf_plugin_steps(method, ctx) -> int:
    """The number of CondTSF plugin steps at ``ctx.preset``: iterations of its backbone's loop where
    the plugin fires (the loop runs ``before_iteration`` on every iteration)."""
    backbone = method.backbone()
    base = method.params.base
    if base == "mtt":
        iterations = backbone.sizes(ctx)[0]
    elif base == "dc":
        iterations = loop_sizes(backbone.params, ctx)[0]
    else:
        iterations = backbone._iterations(ctx)
    return sum(1 for it in range(iterations) if backbone.plugin.due(it))


@METHODS.register("relabelled-random", family="control",
                  description="control: random windows relabelled by condtsf's (or datm's) experts")
class RelabelledRandom(Condenser):
    labels = "expert-relabelled"

    @dataclass
    class Params:
        expert_of: str = "condtsf"     # condtsf | datm: whose experts and relabelling
        strength: float | None = None  # s in [0, 1]; None: the named method's total relabelling
        of_params: dict | None = None  # the named method's parameters (bound by the runner); None: its defaults

        def __post_init__(self):
            checks.one_of(self, "expert_of", CONTROLLED)
            if self.strength is not None:
                checks.between(self, "strength", 0, 1)

    def follows(self) -> str:
        """The method whose parameters the runner binds into ``of_params``."""
        return self.params.expert_of

    def bind(self, params: dict) -> None:
        self.params = dataclasses.replace(self.params, of_params=dict(params))

    def control_of(self) -> str:
        return self.params.expert_of

    def named(self):
        return METHODS.get(self.params.expert_of).make(self.params.of_params or {})

    def check(self, num_windows: int, num_locations: int) -> None:
        self.named().check(num_windows, num_locations)

    def total_relabelling(self, named, ctx) -> tuple[float, int | None]:
        """(s, plugin steps k or None for datm) at ``ctx.preset``."""
        if self.params.expert_of == "condtsf":
            k = condtsf_plugin_steps(named, ctx)
            s = 1.0 - (1.0 - named.params.beta) ** k
        else:
            k, s = None, 1.0 if named.params.soft_targets else 0.0
        return (s if self.params.strength is None else float(self.params.strength)), k

    def condense(self, train, budget, ctx) -> CondensedSet:
        m, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        ids = np.sort(ctx.rng.choice(len(train), size=m, replace=False))   # random's draw, first
        named = self.named()
        view, channels = RealView(train), train.series.num_channels
        # the named method's expert machinery (same parameters, so the same cache entry): CondTSF's are
        # MTT buffers of ``expert_params()``, DATM's its own (an MTT subclass) buffers
        experts = MTT(named.params.expert_params()) if self.params.expert_of == "condtsf" else named
        model = experts.params.model
        shell = _shell(ctx, view.n, model, channels)
        info = {}
        buffers = experts.experts(view, channels, ctx, info, num_params=sum(FlatModel(shell).sizes))
        x, y, mask = real_batch(train, ids)
        y = y.masked_fill(~mask, 0.0)
        s, k = self.total_relabelling(named, ctx)
        forecast = expert_forecast(buffers, shell, x)
        y_s = (1.0 - s) * y + s * forecast
        info.update(control_of=self.params.expert_of, strength=s, plugin_steps=k, expert_model=model,
                    num_experts=len(buffers), real_inputs=ids.tolist())
        return CondensedSet(x=x.detach().clone(), y=y_s.detach().clone(), info=info)
