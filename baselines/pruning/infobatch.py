"""InfoBatch (Qin et al., ICLR 2024): prune part of the well-learned samples, rescale the rest, anneal.

Each sample's score is its latest training loss (the trainer's per-sample loss: MAE or MSE as the run
is configured); unseen samples score +inf, so nothing is "well learned" before it has been seen and
the first epoch visits every sample (InfoBatch starts its scores high for the same effect). Each
epoch before ``floor(delta * E)``: the well-learned set W = {score < mean of the seen scores}; a
uniform random ``prune_ratio`` of W is dropped and the kept part of W carries weight
1 / (1 - prune_ratio); every other sample is kept with weight 1. Later epochs use all samples with
unit weights (annealing, delta = 0.875 as in InfoBatch).

Retention: InfoBatch's knob is ``prune_ratio``, and the visits it yields depend on how many samples
fall below the mean. With ``prune_ratio = None`` (default) the ratio is solved each pruned epoch from
the retention target r: the epoch keeps round(r * n * (epochs so far + 1)) minus the visits already
made (so the full first epoch is paid back later), which fixes how many of W to drop. When even
dropping all of W keeps more than that, the epoch counts as unreachable; the report gives that count
and a note when the retention over the pruned epochs misses r by more than one point. A number for
``prune_ratio`` runs InfoBatch's fixed ratio and only records the retention it reaches.

The target of the pruned epochs is ``budget.pruned_epoch_ratio``: r itself on the ``pruned`` basis
(the paper's protocol), and on the ``total`` basis (default) the lower share that makes the visits
over all epochs, annealed ones included, r x epochs x n. InfoBatch cannot visit fewer samples than
its not-well-learned set, so low total-basis targets are often unreachable; the record then shows the
share it reached.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from stbench.protocols import Pruner
from stbench.registry import METHODS


@METHODS.register("infobatch", family="pruning",
                  description="InfoBatch: prune below-mean-loss samples, rescale by 1/(1-r), anneal")
class InfoBatch(Pruner):
    @dataclass
    class Params:
        prune_ratio: float | None = None   # None: solved per epoch from the retention target
        delta: float = 0.875               # prune during the first floor(delta * E) epochs

        def __post_init__(self):
            if self.prune_ratio is not None and not 0 <= self.prune_ratio < 1:
                raise ValueError(f"prune_ratio must be in [0, 1) or None (got {self.prune_ratio})")
            if not 0 < self.delta <= 1:
                raise ValueError(f"delta must be in (0, 1] (got {self.delta})")

    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        self.scores = np.full(num_samples, np.inf)
        self.pruned_visits: list[int] = []
        self.ratios: list[float] = []
        self.unreachable = 0
        self.annealed = 0

    def epoch(self, epoch: int, num_epochs: int):
        n = self.num_samples
        pruned_epochs = min(num_epochs, math.floor(self.params.delta * num_epochs + 1e-9))
        self.target = self.budget.pruned_epoch_ratio(num_epochs, pruned_epochs)
        if epoch >= pruned_epochs:
            self.annealed += 1
            return np.arange(n), None
        well = self.well_learned()
        well_ids = np.flatnonzero(well)
        drop = self._drop_count(len(well_ids))
        ratio = drop / len(well_ids) if len(well_ids) else 0.0
        kept_well = self.ctx.rng.choice(well_ids, size=len(well_ids) - drop, replace=False)
        ids = np.concatenate([np.flatnonzero(~well), kept_well])
        rescale = len(well_ids) / len(kept_well) if len(kept_well) else 1.0   # 1 / (1 - ratio)
        weights = np.concatenate([np.ones(n - len(well_ids)), np.full(len(kept_well), rescale)])
        order = np.argsort(ids)
        self.pruned_visits.append(len(ids))
        self.ratios.append(ratio)
        return ids[order], weights[order].astype(np.float32)

    def well_learned(self) -> np.ndarray:
        """Score below the mean of the seen scores; unseen samples (+inf) never are."""
        seen = np.isfinite(self.scores)
        return self.scores < self.scores[seen].mean() if seen.any() else np.zeros(len(self.scores), bool)

    def _drop_count(self, num_well: int) -> int:
        """How many well-learned samples this epoch drops: fixed ratio, or solved from the target."""
        if self.params.prune_ratio is not None:
            return round(self.params.prune_ratio * num_well)
        n = self.num_samples
        wanted = round(self.target * n * (len(self.pruned_visits) + 1)) - sum(self.pruned_visits)
        if n - wanted > num_well:
            self.unreachable += 1
        return int(np.clip(n - wanted, 0, num_well))

    def update(self, ids: np.ndarray, per_sample_loss: torch.Tensor) -> None:
        self.scores[np.asarray(ids)] = per_sample_loss.detach().cpu().double().numpy()

    def report(self) -> dict:
        """Retention over the pruned epochs, the prune ratios used, and whether the target was reachable."""
        pruned = len(self.pruned_visits)
        achieved = sum(self.pruned_visits) / (pruned * self.num_samples) if pruned else None
        out = {"pruned_epochs": pruned, "annealed_epochs": self.annealed, "retention_pruned_epochs": achieved,
               "prune_ratio_mean": float(np.mean(self.ratios)) if pruned else None,
               "retention_unreachable_epochs": self.unreachable}
        if self.params.prune_ratio is None and achieved is not None and achieved > self.target + 0.01:
            out["retention_note"] = (f"pruned-epoch retention {self.target:.3f} not reached ({achieved:.3f}): "
                                     "too few samples fell below the mean loss to prune")
        return out
