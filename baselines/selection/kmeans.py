"""K-Means prototypes (ST-Prune Appendix A.2, "K-Means ... clustering ... for center selection").

The training windows are clustered into k = round(r n) clusters by K-Means (k-means++ seeding from
``ctx.torch_generator``, then ``kmeans_iterations`` Lloyd steps or until the centroids stop moving);
the kept windows are the prototypes: for every centroid, the nearest window, all distinct (a window
nearest to several centroids goes to the closest one and the others take their nearest free window).
Unlike K-Center (``kcenter``: farthest-first traversal, which favours outlying windows) this keeps the
windows at the centres of the data's modes. An empty cluster is reseeded at the window farthest from
its centroid.

Features: ``embedding`` (default: the proxy's penultimate activations, DeepCore's embedding for its
geometric selectors), ``gradient``, ``prediction`` or ``window`` (``proxy.py``), projected to
``feature_dim`` = 256 by a Gaussian random projection (distances preserved in expectation), since
every Lloyd step costs O(n k D) in time (assignments go in 64 MB blocks, O(n + k D) memory).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks
from baselines.selection.proxy import ProxyParams, StaticSelector, check_features, row_blocks, sq_distances
from stbench.registry import METHODS


def kmeans_plus_plus(points: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """(k,) ids of k-means++ seeds: the first uniform, each next with probability ~ D^2 (O(n k D))."""
    n = points.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    seeded = torch.zeros(n, dtype=torch.bool)
    seeded[chosen[0]] = True
    closest = sq_distances(points, points[chosen[-1:]]).squeeze(1)
    for _ in range(1, k):
        probs = closest.double().cpu().clamp_min(0).masked_fill(seeded, 0.0)
        if probs.sum() <= 0:   # every remaining point coincides with a seed
            probs = (~seeded).double()
        pick = int(torch.multinomial(probs, 1, generator=gen))
        chosen.append(pick)
        seeded[pick] = True
        closest = torch.minimum(closest, sq_distances(points, points[pick:pick + 1]).squeeze(1))
    return torch.tensor(chosen, dtype=torch.long)


def assign(points: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest centroid id, its squared distance) of every point, block by block."""
    ids = torch.empty(points.shape[0], dtype=torch.long, device=points.device)
    dist = torch.empty(points.shape[0], device=points.device)
    for rows in row_blocks(points.shape[0], centroids.shape[0]):
        d = sq_distances(points[rows], centroids)
        dist[rows], ids[rows] = d.min(dim=1)
    return ids, dist


def kmeans(points: torch.Tensor, k: int, iterations: int, gen: torch.Generator,
           tol: float = 1e-6) -> tuple[torch.Tensor, int]:
    """(k, D) centroids after k-means++ and at most ``iterations`` Lloyd steps, and the steps run."""
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"K-Means needs 1 <= k <= {n}, got k={k}")
    centroids = points[kmeans_plus_plus(points, k, gen).to(points.device)].clone()
    scale = float(points.pow(2).sum(1).mean()) + 1e-12
    steps = 0
    for steps in range(1, iterations + 1):
        labels, dist = assign(points, centroids)
        counts = torch.bincount(labels, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, labels, points)
        new = sums / counts.clamp_min(1)[:, None].to(points.dtype)
        for empty in torch.nonzero(counts == 0).flatten().tolist():   # reseed at the farthest point
            far = int(torch.argmax(dist))
            new[empty] = points[far]
            dist[far] = -1.0
        shift = float((new - centroids).pow(2).sum(1).mean()) / scale
        centroids = new
        if shift < tol:
            break
    return centroids, steps


def nearest_distinct(points: torch.Tensor, centroids: torch.Tensor) -> np.ndarray:
    """(k,) distinct point ids, one per centroid: its nearest point, a point wanted by several
    centroids going to the closest of them and the others taking their nearest free point (repeated)."""
    n, k = points.shape[0], centroids.shape[0]
    if k > n:
        raise ValueError(f"{k} centroids need {k} distinct points, have {n}")
    taken = torch.zeros(n, dtype=torch.bool, device=points.device)
    result = np.full(k, -1, dtype=np.int64)
    pending = torch.arange(k, device=points.device)
    while len(pending):
        best_d = torch.empty(len(pending), device=points.device)
        best_i = torch.empty(len(pending), dtype=torch.long, device=points.device)
        for rows in row_blocks(len(pending), n):
            d = sq_distances(centroids[pending[rows]], points).masked_fill(taken[None, :], torch.inf)
            best_d[rows], best_i[rows] = d.min(dim=1)
        order = torch.argsort(best_d, stable=True).cpu().numpy()
        cand, ids = best_i.cpu().numpy(), pending.cpu().numpy()
        claimed = set()
        left = []
        for j in order:
            if cand[j] in claimed:
                left.append(ids[j])
            else:
                claimed.add(int(cand[j]))
                result[ids[j]] = cand[j]
        taken[torch.as_tensor(sorted(claimed), dtype=torch.long, device=points.device)] = True
        pending = torch.as_tensor(sorted(left), dtype=torch.long, device=points.device)
    return result


@METHODS.register("kmeans", family="selection",
                  description="static: the windows nearest the K-Means centroids of proxy embeddings")
class KMeansPrototypes(StaticSelector):
    @dataclass
    class Params(ProxyParams):
        features: str = "embedding"   # embedding | gradient | prediction | window
        kmeans_iterations: int = 20   # Lloyd steps (fewer when the centroids stop moving)
        feature_dim: int = 256        # random projection width (0: none)

        def __post_init__(self):
            super().__post_init__()
            check_features(self)
            checks.at_least(self, 1, "kmeans_iterations")

    def select(self, train, keep):
        feats = self.features(self.params.features, train)
        with self.phase("select"):
            centroids, steps = kmeans(feats, keep, self.params.kmeans_iterations, self.ctx.torch_generator)
            picks = nearest_distinct(feats, centroids)
        self.info["kmeans_steps"] = steps
        return picks
