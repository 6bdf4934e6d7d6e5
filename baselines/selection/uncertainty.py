"""Predictive uncertainty of a regression proxy, shared by Least Confidence, Entropy and Margin.

DeepCore's uncertainty selectors (Coleman et al. 2020) read a classifier's softmax; the ST-Prune
appendix replaces it with "regression prediction uncertainty". A forecaster gives one point forecast,
so its predictive distribution is sampled with T stochastic forecasts of every window:

* ``mc-dropout`` (Gal & Ghahramani 2016): the trained proxy in eval mode with only its dropout layers
  active (batch norm stays in eval), ``passes`` forward passes per window;
* ``ensemble`` (Lakshminarayanan et al. 2017): ``members`` proxies from independent initialisations and
  batch orders, one forecast each (``members`` times the proxy's training cost);
* ``auto`` (default): ``mc-dropout`` when the proxy has a dropout layer with p > 0 (MTGNN, GWNet,
  STAEformer), else ``ensemble`` (e.g. the MLP). ``selection_info["estimator"]`` records which ran.

From the T samples of every output (horizon, location, channel; all outputs, observed or not, since
no target is read), each selector keeps the windows with the highest score:

* Least Confidence: the mean predictive variance over outputs ("maximum prediction variance");
* Entropy: the summed Gaussian differential entropy, sum_o 0.5 log(2 pi e (var_o + 1e-12)), i.e. the
  entropy of the outputs' Gaussian predictive distributions taken as independent; through the log it
  ranks by the geometric rather than the arithmetic mean of the variances;
* Margin: the mean width of the empirical central ``coverage`` prediction interval (default 90%: the
  5% to 95% sample quantiles, linearly interpolated), "maximum prediction confidence intervals".

Variances are population variances over the T samples. Cost: the proxy's training (``members`` of
them for an ensemble) plus T forward passes over the training windows; memory one batch x T forecasts.
Ties (e.g. identical windows) are broken at random with ``ctx.rng``.
"""
from __future__ import annotations

import abc
import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector, isolated_rng, top_k

ESTIMATORS = ("auto", "mc-dropout", "ensemble")


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


@contextlib.contextmanager
def mc_dropout(model: nn.Module):
    """Eval mode with only the dropout layers in training mode; the previous modes are restored."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.train(mode)


@torch.no_grad()
def predictive_samples(models: list[nn.Module], source, ids: np.ndarray, batch_size: int, passes: int,
                       mc: bool):
    """Per batch of ``ids``: (batch ids, (T, B, L_out, N, C_t) stochastic forecasts). ``mc``: T =
    ``passes`` MC-dropout passes of ``models[0]``; else one eval-mode forecast of each model."""
    for begin in range(0, len(ids), batch_size):
        batch = ids[begin:begin + batch_size]
        x, _, _ = source.batch(batch)
        if mc:
            with mc_dropout(models[0]):
                samples = [models[0](x, source.loc_input) for _ in range(passes)]
        else:
            samples = []
            for model in models:
                was = model.training
                model.eval()
                samples.append(model(x, source.loc_input))
                model.train(was)
        yield batch, torch.stack(samples).flatten(2).float()   # (T, B, D)


def least_confidence_score(samples: torch.Tensor) -> torch.Tensor:
    """(B,) mean over outputs of the predictive variance; ``samples`` (T, B, ...)."""
    return samples.var(dim=0, unbiased=False).flatten(1).mean(1)


def entropy_score(samples: torch.Tensor) -> torch.Tensor:
    """(B,) sum over outputs of the Gaussian entropy 0.5 log(2 pi e var)."""
    var = samples.double().var(dim=0, unbiased=False).flatten(1)
    return (0.5 * torch.log(2 * math.pi * math.e * (var + 1e-12))).sum(1).float()


def _quantile(ordered: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolated quantile along dim 0 of an already sorted tensor (numpy's default rule)."""
    pos = q * (ordered.shape[0] - 1)
    low, frac = int(math.floor(pos)), pos - math.floor(pos)
    high = min(low + 1, ordered.shape[0] - 1)
    return ordered[low] + frac * (ordered[high] - ordered[low])


def margin_score(samples: torch.Tensor, coverage: float = 0.9) -> torch.Tensor:
    """(B,) mean over outputs of the central ``coverage`` interval's width across the T samples."""
    ordered = samples.sort(dim=0).values
    tail = (1 - coverage) / 2
    return (_quantile(ordered, 1 - tail) - _quantile(ordered, tail)).flatten(1).mean(1)


class UncertaintySelector(StaticSelector):
    """Keeps the round(r n) windows of highest ``score(samples)`` (see the module doc)."""

    @dataclass
    class Params(ProxyParams):
        estimator: str = "auto"   # auto | mc-dropout | ensemble
        passes: int = 10          # MC-dropout forward passes per window
        members: int = 5          # ensemble proxies

        def __post_init__(self):
            super().__post_init__()
            checks.one_of(self, "estimator", ESTIMATORS)
            checks.at_least(self, 2, "passes", "members")

    @abc.abstractmethod
    def score(self, samples: torch.Tensor) -> torch.Tensor:
        """(B,) uncertainty of each window from its stochastic forecasts ``samples`` (T, B, ...); higher is kept."""

    def select(self, train, keep):
        p = self.params
        first = self.new_proxy(train)
        estimator = p.estimator
        if estimator == "auto":
            estimator = "mc-dropout" if has_dropout(first.model) else "ensemble"
        if estimator == "mc-dropout" and not has_dropout(first.model):
            raise ValueError(f"estimator mc-dropout: {type(first.model).__name__} has no dropout layer; "
                             "use estimator=ensemble (or auto)")
        models = [first.model]
        if estimator == "ensemble":
            models += [self.new_proxy(train).model for _ in range(p.members - 1)]
        mc = estimator == "mc-dropout"
        self.info.update(estimator=estimator, samples=p.passes if mc else p.members)
        scores = torch.empty(len(train))
        source = self.source(train)
        with self.phase("score"), isolated_rng(self.ctx):
            for batch, samples in predictive_samples(models, source, np.arange(len(train)), self.settings.batch,
                                                     p.passes, mc):
                scores[torch.as_tensor(batch)] = self.score(samples).cpu()
        with self.phase("select"):
            return top_k(scores.numpy(), keep, self.ctx.rng)
