"""Cal, contrastive active learning (Margatina et al. 2021; ST-Prune Appendix A.2).

CAL keeps the examples whose predictions differ most from those of their nearest neighbours in the
model's feature space: "contrastive" examples, similar inputs with dissimilar outputs (DeepCore's
``cal.py``: the mean KL divergence between an example's softmax output and its k neighbours'). For
forecasting:

* neighbours: the ``neighbours`` (default 10, DeepCore's) nearest windows in Euclidean distance on
  ``features`` (default ``embedding``: the proxy's penultimate activations; ``window`` uses the raw
  windows, as DeepCore uses a separate pretrained encoder; ``gradient``/``prediction`` also work);
* divergence: the mean over outputs of the symmetric KL between the two windows' Gaussian predictive
  distributions N(forecast, sigma_o^2), sigma_o^2 the proxy's training residual variance at output o
  (the ``prediction`` features of ``proxy.py``, whose squared distances are exactly this);
* score: the mean divergence to the neighbours; the highest scores are kept (ties at random). (DeepCore
  sorts ascending and keeps the lowest; Margatina et al. acquire the highest, as the appendix's
  "decision boundary" framing needs.)

Cost: one proxy, two feature passes and the k-NN search, O(n^2 D) time in 64 MB blocks (no n x n
matrix held); memory O(n (D + D_pred)).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector, check_features, row_blocks, sq_distances, top_k
from stbench.registry import METHODS


def nearest_neighbours(features: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) ids of each row's k nearest other rows (Euclidean; ties: lowest id first)."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k-NN needs 1 <= k < {n}, got k={k}")
    out = torch.empty(n, k, dtype=torch.long, device=features.device)
    for rows in row_blocks(n, n):
        d = sq_distances(features[rows], features)
        own = torch.arange(rows.start, rows.stop, device=features.device)
        d[own - rows.start, own] = torch.inf
        out[rows] = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return out


def contrastive_scores(neighbours: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """(n,) mean squared distance between each row of ``predictions`` and its neighbours' rows."""
    n, k = neighbours.shape
    out = torch.empty(n, device=predictions.device)
    for rows in row_blocks(n, k * predictions.shape[1]):
        diff = predictions[rows, None, :] - predictions[neighbours[rows]]
        out[rows] = diff.pow(2).sum(-1).mean(1)
    return out


@METHODS.register("cal", family="selection",
                  description="static: windows whose forecasts diverge most from their feature-space neighbours'")
class Cal(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        features: str = "embedding"   # the neighbour space: embedding | gradient | prediction | window
        neighbours: int = 10

        def __post_init__(self):
            super().__post_init__()
            check_features(self)
            checks.at_least(self, 1, "neighbours")

    def select(self, train, keep):
        proxy = self.new_proxy(train)
        space = self.features(self.params.features, train, proxy)
        predictions = self.features("prediction", train, proxy) if self.params.features != "prediction" else space
        k = min(self.params.neighbours, len(train) - 1)
        with self.phase("select"):
            scores = contrastive_scores(nearest_neighbours(space, k), predictions)
            return top_k(scores.double().cpu().numpy(), keep, self.ctx.rng)
