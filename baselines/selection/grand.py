"""GraNd (Paul et al. 2021; ST-Prune Appendix A.2): the windows with the largest expected gradient norm.

GraNd_i = E_theta ||grad_theta l_i(theta)||, the expectation over ``repeats`` independent proxies
(fresh initialisations and batch orders, each trained ``proxy_epochs``: Paul et al. score early in
training and average 10 initialisations; DeepCore's default is 10 repeats), l_i the proxy's loss on
window i (MAE under the stprune preset, else MSE, in normalised units, masked). The highest scores are
kept (ties at random).

``scope``: ``"last"`` (default, DeepCore's) takes the gradient w.r.t. the last layer's weight and bias,
in closed form per window from one batched backward (``proxy.py``); ``"all"`` takes the exact
gradient w.r.t. every parameter, one backward pass per window (n backward passes per repeat: exact
but slow; use it on small data or a small ``proxy_model``). Gradients are taken in eval mode (no
dropout). Cost: ``repeats`` proxy trainings plus one gradient pass each; memory O(n) beyond a batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks
from baselines.selection.proxy import Proxy, ProxyParams, StaticSelector, frozen_eval, top_k
from stbench.registry import METHODS
from stbench.train import per_sample_loss

SCOPES = ("last", "all")


def gradient_norms(proxy: Proxy, scope: str = "last") -> torch.Tensor:
    """(n,) ||d l_i / d theta|| for every window of the proxy's source (``scope`` as in the module doc)."""
    if scope == "last":
        return torch.cat([b["grad"].norm(dim=1) for b in proxy.passes(gradients=True)])
    model, source = proxy.model, proxy.source
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    norms = torch.empty(len(source), device=source.loc_input.device)
    with frozen_eval(model):
        for p in params:
            p.requires_grad_(True)
        try:
            for i in range(len(source)):
                x, y, mask = source.batch(np.array([i]))
                loss = per_sample_loss(model(x, source.loc_input), y, mask, None, proxy.settings.loss).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norms[i] = torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None))
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
    return norms


def grand_scores(proxies: list[Proxy], scope: str = "last") -> torch.Tensor:
    """(n,) the mean gradient norm over ``proxies``."""
    return torch.stack([gradient_norms(p, scope) for p in proxies]).mean(0)


@METHODS.register("grand", family="selection",
                  description="static: windows of largest expected loss-gradient norm over proxy initialisations")
class GraNd(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        repeats: int = 10        # independent proxies the norm is averaged over
        scope: str = "last"      # last: last-layer gradient (DeepCore) | all: every parameter (exact, slow)

        def __post_init__(self):
            super().__post_init__()
            checks.at_least(self, 1, "repeats")
            checks.one_of(self, "scope", SCOPES)

    def select(self, train, keep):
        total = torch.zeros(len(train), dtype=torch.float64)
        for _ in range(self.params.repeats):
            proxy = self.new_proxy(train)
            with self.phase("score"):
                total += gradient_norms(proxy, self.params.scope).double().cpu()
        self.info.update(repeats=self.params.repeats, scope=self.params.scope)
        with self.phase("select"):
            return top_k((total / self.params.repeats).numpy(), keep, self.ctx.rng)
