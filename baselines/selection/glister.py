"""Glister (Killamsetty et al. 2021; ST-Prune Appendix A.2): greedy gradient matching to held-out data.

Glister picks the training samples whose gradient step most reduces the loss on held-out data, with a
first-order (Taylor) approximation of that loss, greedily, updating the held-out gradient as the set
grows (DeepCore's ``glister.py``, with the regression loss in place of cross-entropy). Here:

* Held-out data: a random ``holdout`` share (default 10%, ``ctx.rng``) of the **training** windows,
  never the validation split (which selects the tested checkpoint) nor the test split; the held-out
  part is never selected and the proxy does not train on it. It shrinks to n - round(r n) windows
  when the budget needs more candidates (``selection_info["holdout"]`` records its size).
* Gradients: last-layer gradients of the proxy's loss (DeepCore's; ``proxy.py``), per candidate
  window, and g_hold, the mean gradient over the held-out windows.
* Greedy: the gain of candidate i is g_i . g_hold (the decrease of the held-out loss by a step along
  -g_i, to first order). The budget is filled in ``rounds`` rounds (default 10; ``rounds`` = budget is
  DeepCore's one-pick-per-update greedy): each round keeps its share of the budget with the largest
  gains, then the proxy's last layer takes the step theta' = theta - eta * mean of the selected
  gradients (DeepCore's update, with ``eta`` = 0.1, its selection learning rate) and g_hold is computed
  again at theta', exactly, by a pass over the held-out windows (DeepCore's closed form of the same
  last-layer step).

Cost: one proxy training on the candidates, one gradient pass over the training windows, ``rounds``
gradient passes over the held-out part; memory O(n G) for the candidates' gradients (G the last
layer's size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector, top_k
from stbench.registry import METHODS


def held_out_split(n: int, keep: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(held-out ids, candidate ids), both sorted: max(1, round(share n)) held out, at most n - keep."""
    size = min(max(1, round(share * n)), n - keep)
    perm = rng.permutation(n)
    return np.sort(perm[:size]), np.sort(perm[size:])


@METHODS.register("glister", family="selection",
                  description="static: greedy gradient matching to a held-out part of the training windows")
class Glister(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        holdout: float = 0.1   # share of the training windows held out for the matching target
        rounds: int = 10       # greedy rounds, each followed by a held-out gradient update
        eta: float = 0.1       # step size of the one-step last-layer update

        def __post_init__(self):
            super().__post_init__()
            checks.between(self, "holdout", 0.0, 1.0, low_open=True, high_open=True)
            checks.at_least(self, 1, "rounds")
            checks.positive(self, "eta")

    def select(self, train, keep):
        held, candidates = held_out_split(len(train), keep, self.params.holdout, self.ctx.rng)
        proxy = self.new_proxy(train, fit_ids=candidates)
        with self.phase("score"):
            grads = proxy.gradients(candidates)
            target = proxy.gradients(held).mean(0)
        chosen = torch.zeros(len(candidates), dtype=torch.bool, device=grads.device)
        parts = np.array_split(np.arange(keep), min(self.params.rounds, keep))
        with self.phase("select"):
            for r, part in enumerate(parts):
                gains = (grads @ target).masked_fill(chosen, -torch.inf)
                picks = top_k(gains.double().cpu().numpy(), len(part), self.ctx.rng)
                chosen[torch.as_tensor(picks, device=chosen.device)] = True
                if r + 1 < len(parts):
                    step = self.params.eta * grads[chosen].mean(0)
                    with proxy.last_layer_step(step):
                        target = proxy.gradients(held).mean(0)
        self.info.update(holdout=int(len(held)), rounds=len(parts))
        return candidates[chosen.cpu().numpy()]
