"""Forgetting (Toneva et al. 2019; ST-Prune Appendix A.2): the windows the proxy forgets most often.

DeepCore records, for every training batch of its proxy, whether each example is classified correctly
and counts a forgetting event whenever an example goes from correct to incorrect. The ST-Prune appendix
replaces accuracy with "regression error change statistics". Here:

* history: the per-window training loss of the proxy (the trainer's per-sample loss of the batch's
  forward pass, before the step, as DeepCore's ``after_loss``), one row per proxy epoch;
* "learned" at epoch e: loss <= tau_e, the ``threshold_quantile`` quantile (default: the median) of the
  epoch's losses. A threshold relative to the epoch keeps "learned" meaningful while all losses fall,
  as "correct" is relative to the current classifier;
* a forgetting event: learned at epoch e - 1 and not at epoch e (the error rises above the threshold
  after having fallen below it); windows never learned count 0 events, as in DeepCore (Toneva et al.
  count them as forgotten infinitely often; DeepCore starts every example "incorrect", so they score 0);
* the windows with the most events are kept; ties (many windows share a count) go to the larger
  fluctuation, the sum of the loss increases between consecutive epochs ("fluctuation patterns of
  prediction errors"), then at random (``ctx.rng``).

An event needs two epochs, so with ``proxy_epochs=None`` the proxy trains at least 2 (the smoke
preset's 1 would make every count 0). Cost: the proxy's training only (the history comes from its own
forward passes); memory E x n floats.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector
from stbench.registry import METHODS


def forgetting_events(history: np.ndarray, thresholds) -> np.ndarray:
    """(n,) counts of learned -> not learned transitions between consecutive rows of ``history``
    (E, n) losses, "learned" meaning loss <= the row's threshold (``thresholds``: scalar or (E,))."""
    history = np.asarray(history, dtype=np.float64)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (history.shape[0],))
    learned = history <= thr[:, None]
    return (learned[:-1] & ~learned[1:]).sum(axis=0)


def fluctuation(history: np.ndarray) -> np.ndarray:
    """(n,) sum of the loss increases between consecutive epochs."""
    return np.clip(np.diff(np.asarray(history, dtype=np.float64), axis=0), 0.0, None).sum(axis=0)


@METHODS.register("forgetting", family="selection",
                  description="static: windows whose proxy training error most often rises back above threshold")
class Forgetting(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        threshold_quantile: float = 0.5   # tau_e: this quantile of epoch e's training losses

        def __post_init__(self):
            super().__post_init__()
            checks.between(self, "threshold_quantile", 0.0, 1.0, low_open=True, high_open=True)

    def select(self, train, keep):
        if self.params.proxy_epochs is None and self.settings.epochs < 2:
            self.settings = dataclasses.replace(self.settings, epochs=2)
        n, epochs = len(train), self.settings.epochs
        history = np.full((epochs, n), np.nan)

        def record(epoch, ids, losses):
            history[epoch, ids] = losses.detach().double().cpu().numpy()

        self.new_proxy(train, on_batch=record)
        with self.phase("score"):
            if epochs:
                thresholds = np.nanquantile(history, self.params.threshold_quantile, axis=1)
                events, swings = forgetting_events(history, thresholds), fluctuation(history)
            else:
                events, swings = np.zeros(n, dtype=np.int64), np.zeros(n)
        with self.phase("select"):
            order = np.lexsort((self.ctx.rng.random(n), -swings, -events))[:keep]
        self.info.update(max_events=int(events.max()) if n else 0,
                         share_forgotten=float((events > 0).mean()) if n else 0.0,
                         kept_min_events=int(events[order].min()))
        return order
