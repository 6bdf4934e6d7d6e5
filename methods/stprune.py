"""ST-Prune (Chen et al. 2026, "Learning from Complexity"): dynamic pruning of spatio-temporal windows.

Each pruned epoch (the first ``delta * E``, Sec. 4.2.2):

1. Every sample carries the score H (eq. 3) of its latest training forward pass, computed from its
   absolute error matrix E (horizon x locations, normalised target units; the trainer passes it because
   ``wants_error_matrix = True``): H = mean(E) + lam * (sigma_space(E) + sigma_time(E)).
2. Samples with H >= mean H form the informative set S_inf, the others the redundant set S_red (eq. 4).
3. S_inf is kept, and round(r * n) - |S_inf| samples of S_red are drawn uniformly without replacement:
   each redundant sample is kept with probability p = (round(r * n) - |S_inf|) / |S_red| (Sec. 4.1.3),
   and every pruned epoch visits exactly round(r * n) samples, so the retention over the pruned epochs
   is the target up to rounding.
4. The rescaled set's kept samples carry w_i = 1/(1 - r) * (mean_delta / (delta_i + eps))^alpha
   (eq. 5), the others weight 1 (eq. 6); delta_i is the temporal variance of sample i's targets.

The last epochs (``e >= floor(delta * E)``) visit every sample with unit weights.

Retention basis: the pruned epochs keep round(r' n) with r' = ``budget.pruned_epoch_ratio``: r on the
``pruned`` basis (the paper's protocol, where the annealed epochs add visits beyond r), and on the
``total`` basis (default) the lower share that makes the visits over all E epochs r E n (for example
r = 0.3, E = 30, delta = 0.9: 27 pruned epochs at 22.2%). A target below what the annealed epochs
alone visit keeps one sample per pruned epoch, and the record shows the share reached.

Choices where the paper is open, each a parameter:

* ``rescale`` (a): ``"redundant"`` (default) puts eq. 5 on the kept redundant samples, as the text
  says ("preserved stationary samples ... representing the population of pruned stationary data") and
  as InfoBatch does; ``"informative"`` puts it on the kept informative samples, as eq. 6 is printed.
  In both, r is the fraction of the rescaled set pruned this epoch (InfoBatch's meaning), so
  1/(1 - r) is its inverse keep rate and eq. 6 is unbiased in expectation before the correction.
* ``overflow`` (b): when |S_inf| alone exceeds round(r * n), ``"top"`` (default) keeps the
  round(r * n) highest-scored informative samples and ``"sample"`` a uniform random subset of S_inf;
  no redundant sample is kept then. **So at low retention eq. 5 may never apply.** With the default
  ``rescale="redundant"``, an overflowing epoch keeps no redundant sample and every kept sample
  weighs 1: eq. 5 (and with it ``alpha`` and ``eps``) has no effect on it. S_inf holds the samples
  scoring at least the mean, typically 30-50% of the data, so at r <= 0.3 most or all pruned epochs
  overflow once every sample has been seen, and ``stprune`` then equals its ablation
  ``stprune-wo-res`` to the last digit (seen at r = 10%). We keep the choice (the paper keeps S_inf
  whole and gives no rule for an S_inf larger than the budget; weighting the kept informative samples
  instead is ``rescale="informative"``), and every run records how often eq. 5 applied: ``report()``
  gives ``eq5_weighted_visits``, the kept visits over the pruned epochs that carried an eq. 5 weight,
  ``eq5_weighted_share``, their share of the kept visits over the pruned epochs (0: eq. 5 never
  applied, the run is in effect the w/o Res. ablation), and ``eq5_weighted_epochs``, the pruned
  epochs with at least one such visit. In ``stprune-wo-res`` (alpha = 0) the counted weight is the
  uniform 1/(1 - r).
* ``spread``: ``"axis"`` (default) takes the standard deviation along each axis and averages it over
  the other (sigma_space = mean over horizon steps of the std over locations); ``"profile"`` takes the
  std of the mean profile (sigma_space = std over locations of the per-location mean error).
* Scores start at +inf: an unseen sample is informative and outranks every seen one, so the first
  epochs sweep the data without replacement before scores decide (InfoBatch starts scores high too).
  The mean threshold is taken over the seen samples; a sample with no observed target scores 0.
* Standard deviations are population (ddof 0) and skip unobserved entries; delta_i is the masked
  temporal variance of the normalised targets, averaged over (location, target channel) series with
  at least two observed steps (a sample with none gets mean_delta). Normalised units make ``eps``
  comparable across datasets. The paper gives no alpha; the default 0.5 is ours.

Parameter ranges (``0 < delta <= 1``, ``lam >= 0``, ``alpha >= 0``, ``eps > 0`` and the choices above)
are checked on construction with a ``ValueError`` that the runner reports as one CLI error line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from stbench.protocols import Pruner
from stbench.registry import METHODS

_INTENSITY_BATCH = 256


def _nanstd(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Population standard deviation along ``dim`` over the non-NaN entries (NaN where there are none)."""
    valid = ~torch.isnan(x)
    count = valid.sum(dim, keepdim=True)
    mean = torch.where(valid, x, 0.0).sum(dim, keepdim=True) / count.clamp(min=1)
    var = torch.where(valid, (x - mean) ** 2, 0.0).sum(dim, keepdim=True) / count.clamp(min=1)
    return var.sqrt().masked_fill(count == 0, float("nan")).squeeze(dim)


def complexity_score(errors: torch.Tensor, lam: float, spread: str = "axis") -> torch.Tensor:
    """Eq. 3 for a batch of error matrices (B, T, N): mean + lam * (sigma_space + sigma_time).

    NaN entries (unobserved) are skipped; a sample with no observed entry scores 0.
    """
    mean = torch.nanmean(errors, (1, 2))
    if spread == "axis":
        space = torch.nanmean(_nanstd(errors, 2), 1)
        time = torch.nanmean(_nanstd(errors, 1), 1)
    else:
        space = _nanstd(torch.nanmean(errors, 1), 1)
        time = _nanstd(torch.nanmean(errors, 2), 1)
    score = mean + lam * (torch.nan_to_num(space) + torch.nan_to_num(time))
    return torch.nan_to_num(score, nan=0.0)


def temporal_variance(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """delta_i of eq. 5 for a batch of normalised targets y (B, T, N, C) with observed ``mask``.

    Masked population variance over T per (location, channel), averaged over the series with at least
    two observed steps; NaN for a sample with none.
    """
    m = mask.to(y.dtype)
    count = m.sum(dim=1)
    mean = (y * m).sum(dim=1) / count.clamp(min=1)
    var = (((y - mean.unsqueeze(1)) ** 2) * m).sum(dim=1) / count.clamp(min=1)
    usable = (count >= 2).to(y.dtype)
    return (var * usable).sum(dim=(1, 2)) / usable.sum(dim=(1, 2))


def stationarity_weights(delta_i: np.ndarray, delta_mean: float, keep_rate: float, alpha: float,
                         eps: float) -> np.ndarray:
    """Eq. 5: w_i = 1/(1 - r) * (mean_delta / (delta_i + eps))^alpha, with 1 - r = ``keep_rate``."""
    return (delta_mean / (delta_i + eps)) ** alpha / keep_rate


def pruned_epoch_count(delta: float, num_epochs: int) -> int:
    """Epochs 0 .. floor(delta * E) - 1 prune; the rest anneal on the full data (Sec. 4.2.2)."""
    return min(num_epochs, math.floor(delta * num_epochs + 1e-9))


@METHODS.register("stprune", family="pruning",
                  description="ST-Prune: complexity score, soft pruning, stationarity rescaling, annealing")
class STPrune(Pruner):
    """ST-Prune; the module docstring gives the algorithm and every choice the paper leaves open."""

    wants_error_matrix = True

    @dataclass
    class Params:
        lam: float = 0.5              # lambda of eq. 3 (Table A.2)
        alpha: float = 0.5            # correction strength of eq. 5 (not given by the paper)
        eps: float = 0.01             # epsilon of eq. 5, in normalised target variance
        delta: float = 0.9            # annealing cutoff (Table A.2)
        rescale: str = "redundant"    # redundant | informative: which kept set carries eq. 5
        overflow: str = "top"         # top | sample: when S_inf alone exceeds the budget
        spread: str = "axis"          # axis | profile: how eq. 3's standard deviations are taken

        def __post_init__(self):
            for name, allowed in (("rescale", ("redundant", "informative")), ("overflow", ("top", "sample")),
                                  ("spread", ("axis", "profile"))):
                if getattr(self, name) not in allowed:
                    raise ValueError(f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
            for name, ok, rule in (("delta", lambda v: 0 < v <= 1, "in (0, 1]"), ("lam", lambda v: v >= 0, ">= 0"),
                                   ("alpha", lambda v: v >= 0, ">= 0"), ("eps", lambda v: v > 0, "> 0")):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                    raise ValueError(f"{name} must be {rule} (got {value})")

    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        self.scores = np.full(num_samples, np.inf)
        self.intensity = self._intensity(num_samples)
        self.intensity_mean = float(self.intensity.mean())
        self.visits: list[tuple[bool, int]] = []   # (pruned epoch?, samples visited)
        self.eq5_visits: list[int] = []            # per pruned epoch: kept samples carrying eq. 5 weights

    def _intensity(self, num_samples: int) -> np.ndarray:
        """delta_i for every training window, streamed once over the training split (eq. 5)."""
        series = self.ctx.series
        train = series.split("train")
        if len(train) != num_samples:
            raise ValueError(f"stprune scores the {len(train)} training windows, asked for {num_samples}")
        parts = [temporal_variance(series.scale_target(b.y), b.mask).cpu()
                 for b in train.iter_batches(_INTENSITY_BATCH)]
        values = torch.cat(parts).double().numpy()
        known = np.isfinite(values)
        fill = values[known].mean() if known.any() else 1.0
        return np.where(known, values, fill)

    def epoch(self, epoch: int, num_epochs: int):
        n = self.num_samples
        pruned_epochs = pruned_epoch_count(self.params.delta, num_epochs)
        self.keep = max(1, round(self.budget.pruned_epoch_ratio(num_epochs, pruned_epochs) * n))
        if epoch >= pruned_epochs:
            self.visits.append((False, n))
            return np.arange(n), None
        informative = self.informative()
        inf_ids, red_ids = np.flatnonzero(informative), np.flatnonzero(~informative)
        kept_inf = self._cap(inf_ids)
        kept_red = self.ctx.rng.choice(red_ids, size=self.keep - len(kept_inf), replace=False)
        if self.params.rescale == "redundant":
            weights = (np.ones(len(kept_inf)), self._rescaled(kept_red, len(red_ids)))
            self.eq5_visits.append(len(kept_red))     # 0 when S_inf overflows the budget: no eq. 5 at all
        else:
            weights = (self._rescaled(kept_inf, len(inf_ids)), np.ones(len(kept_red)))
            self.eq5_visits.append(len(kept_inf))
        ids, w = np.concatenate([kept_inf, kept_red]), np.concatenate(weights)
        order = np.argsort(ids)
        self.visits.append((True, len(ids)))
        return ids[order], w[order].astype(np.float32)

    def informative(self) -> np.ndarray:
        """Eq. 4: H >= mean H over the seen samples; unseen samples (H = +inf) are informative."""
        seen = np.isfinite(self.scores)
        threshold = self.scores[seen].mean() if seen.any() else -np.inf
        return self.scores >= threshold

    def _cap(self, inf_ids: np.ndarray) -> np.ndarray:
        """Decision (b): all of S_inf if it fits the budget, else the top-scored or a random part of it."""
        if len(inf_ids) <= self.keep:
            return inf_ids
        if self.params.overflow == "sample":
            return self.ctx.rng.choice(inf_ids, size=self.keep, replace=False)
        ties = self.ctx.rng.random(len(inf_ids))
        return inf_ids[np.lexsort((ties, -self.scores[inf_ids]))[:self.keep]]

    def _rescaled(self, kept: np.ndarray, set_size: int) -> np.ndarray:
        """Eq. 5 weights for the kept part of a set of ``set_size`` samples (1 - r = kept / set size)."""
        if len(kept) == 0:
            return np.ones(0)
        return stationarity_weights(self.intensity[kept], self.intensity_mean, len(kept) / set_size,
                                    self.params.alpha, self.params.eps)

    def update(self, ids: np.ndarray, per_sample_loss: torch.Tensor, errors: torch.Tensor | None = None) -> None:
        """Store each visited sample's eq. 3 score from its error matrix (B, T, N)."""
        if errors is None:
            raise ValueError("stprune scores the per-sample error matrix: the trainer must pass errors=")
        score = complexity_score(errors.detach().float(), self.params.lam, self.params.spread)
        self.scores[np.asarray(ids)] = score.cpu().double().numpy()

    def report(self) -> dict:
        """Retention over the pruned epochs (the target applies there), the epoch counts, and how often
        eq. 5 applied: kept visits over the pruned epochs that carried an eq. 5 weight, their share of
        the kept visits over the pruned epochs, and the pruned epochs with at least one (decision (b))."""
        pruned = [v for p, v in self.visits if p]
        eq5 = int(sum(self.eq5_visits))
        out = {"pruned_epochs": len(pruned), "annealed_epochs": len(self.visits) - len(pruned),
               "retention_pruned_epochs": sum(pruned) / (len(pruned) * self.num_samples) if pruned else None,
               "eq5_weighted_visits": eq5, "eq5_weighted_share": eq5 / sum(pruned) if sum(pruned) else None,
               "eq5_weighted_epochs": int(sum(1 for v in self.eq5_visits if v > 0))}
        total = sum(v for _, v in self.visits) / (len(self.visits) * self.num_samples) if self.visits else None
        if total is not None and total > self.budget.ratio + 0.01 and self.budget.basis == "total":
            out["retention_note"] = (f"total retention {self.budget.ratio:g} not reached ({total:.3f}): the "
                                     f"{len(self.visits) - len(pruned)} annealed epochs alone visit more")
        return out


@METHODS.register("stprune-wo-stc", family="pruning", description="ST-Prune ablation: score = mean error only")
class STPruneWithoutComplexity(STPrune):
    """Ablation w/o STC (Sec. 5.6): lam = 0, so eq. 3 reduces to the mean absolute error."""

    @dataclass
    class Params(STPrune.Params):
        lam: float = 0.0


@METHODS.register("stprune-wo-res", family="pruning", description="ST-Prune ablation: uniform 1/(1-r) weights")
class STPruneWithoutRescaling(STPrune):
    """Ablation w/o Res. (Sec. 5.6): alpha = 0, so eq. 5 is InfoBatch's uniform 1/(1 - r)."""

    @dataclass
    class Params(STPrune.Params):
        alpha: float = 0.0


@METHODS.register("stprune-wo-anne", family="pruning", description="ST-Prune ablation: no annealing")
class STPruneWithoutAnnealing(STPrune):
    """Ablation w/o Anne. (Sec. 5.6): delta = 1, every epoch is pruned."""

    @dataclass
    class Params(STPrune.Params):
        delta: float = 1.0
