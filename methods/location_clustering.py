"""STemDist Algorithm 3: cluster the training locations and average them into a clustered dataset.

Each location's feature vector is its normalised training input windows flattened, shape
(M_T * L_in * F,). Stride-1 windows repeat every time step up to L_in times, so instead of building
that matrix we cluster the step series with each step scaled by sqrt(number of input windows that
contain it): squared Euclidean distances, and so the K-means result, are exactly those of the
flattened windows, at 1/L_in of the memory. Centroids are member means (Algorithm 3 line 4); the
weights are w_i = |C_i| / N_T (line 5). Targets are averaged over observed members only, so a
missing reading never pulls a cluster mean towards zero (the reference averages raw zeros in).

K-means: k-means++ seeding with D^2 sampling (Arthur & Vassilvitskii 2007; the reference library
samples proportionally to D), Lloyd iterations up to ``T_kmeans`` (paper: 300), and the reference's
repair of empty clusters: the point farthest from the centroid of the largest cluster moves in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stbench.data.windows import WindowSet


@dataclass
class ClusteredData:
    """Clustered training series; window m spans steps starts[m] .. starts[m] + L_in + L_out - 1."""
    x: torch.Tensor          # (T_train, N_S, C) normalised inputs
    y: torch.Tensor          # (T_train, N_S, C_t) normalised targets
    y_mask: torch.Tensor     # (T_train, N_S, C_t) bool: at least one member observed
    starts: torch.Tensor     # (M_T,) window starts
    weights: torch.Tensor    # (N_S,) w_i = |C_i| / N_T
    assignment: torch.Tensor  # (N_T,) cluster of each original location (-1: not used)
    input_len: int
    output_len: int

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    def gather(self, ids: torch.Tensor):
        """x (B, L_in, N_S, C), y (B, L_out, N_S, C_t), mask, for window ids."""
        s = self.starts[ids][:, None]
        x_steps = s + torch.arange(self.input_len, device=s.device)
        y_steps = s + self.input_len + torch.arange(self.output_len, device=s.device)
        return self.x[x_steps], self.y[y_steps], self.y_mask[y_steps]

    def location_input(self) -> torch.Tensor:
        """(N_S, L_in, C): mean input window per location (paper eq. 3), computed once."""
        steps = self.starts[:, None] + torch.arange(self.input_len, device=self.starts.device)
        total = torch.zeros_like(self.x[:self.input_len], dtype=torch.float64)
        for block in torch.split(steps, 1024):
            total += self.x[block].sum(dim=0, dtype=torch.float64)
        return (total / self.num_windows).float().permute(1, 0, 2).contiguous()


def normalised_training_series(train: WindowSet):
    """Normalised inputs (T_train, N, C) with missing entries 0, targets and their mask."""
    series = train.series
    t_end = int(train.starts[-1]) + series.spec.length
    values = series.values[:t_end]
    observed = None if series.observed is None else series.observed[:t_end]
    x = values if series.inputs is None else values[..., series.inputs]
    x = (x - series.x_mean) / series.x_std
    y = series.scale_target(values[..., series.targets])
    if observed is None:
        y_mask = torch.ones_like(y, dtype=torch.bool)
    else:
        x_obs = observed if series.inputs is None else observed[..., series.inputs]
        x = x.masked_fill(~x_obs, 0.0)
        y_mask = observed[..., series.targets]
    if series.mask_zeros:
        y_mask = y_mask & (values[..., series.targets] != 0)
    return x, y.masked_fill(~y_mask, 0.0), y_mask


def window_step_weights(num_windows: int, input_len: int, device) -> torch.Tensor:
    """How many input windows (stride 1) contain each step 0 .. num_windows + input_len - 2."""
    counts = np.convolve(np.ones(num_windows), np.ones(input_len))
    return torch.as_tensor(counts, dtype=torch.float32, device=device)


def location_features(x: torch.Tensor, num_windows: int, input_len: int) -> torch.Tensor:
    """(N, T_x * C) rows whose distances equal those of the flattened input windows."""
    steps = num_windows + input_len - 1
    weights = window_step_weights(num_windows, input_len, x.device).sqrt()
    return (x[:steps] * weights[:, None, None]).permute(1, 0, 2).reshape(x.shape[1], -1)


def _sq_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    d = (points * points).sum(1, keepdim=True) - 2 * points @ centroids.T + (centroids * centroids).sum(1)
    return d.clamp_min_(0)


def kmeans_pp_init(points: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++: first centre uniform, then each next with probability proportional to D^2."""
    n = points.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    closest = _sq_distances(points, points[chosen[-1]][None]).squeeze(1)
    for _ in range(1, k):
        probs = closest.double().cpu()
        if probs.sum() <= 0:  # all remaining points coincide with a centre
            probs = torch.ones(n, dtype=torch.float64)
            probs[chosen] = 0
        chosen.append(int(torch.multinomial(probs, 1, generator=gen)))
        closest = torch.minimum(closest, _sq_distances(points, points[chosen[-1]][None]).squeeze(1))
    return points[chosen].clone()


def _member_means(points: torch.Tensor, assign: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    counts = torch.bincount(assign, minlength=k)
    sums = torch.zeros(k, points.shape[1], device=points.device, dtype=points.dtype).index_add_(0, assign, points)
    return sums / counts.clamp_min(1)[:, None].to(points.dtype), counts


def _repair_empty(points, assign, centroids, counts) -> bool:
    """Move the point farthest from the largest cluster's centroid into each empty cluster."""
    repaired = False
    for empty in torch.nonzero(counts == 0).flatten().tolist():
        largest = int(torch.argmax(counts))
        members = torch.nonzero(assign == largest).flatten()
        far = members[torch.argmax(((points[members] - centroids[largest]) ** 2).sum(1))]
        assign[far] = empty
        counts[largest] -= 1
        counts[empty] += 1
        repaired = True
    return repaired


def kmeans(points: torch.Tensor, k: int, iterations: int, gen: torch.Generator,
           tol: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(assignment (N,), centroids (k, D) = member means, Lloyd iterations run)."""
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"cannot form {k} clusters from {points.shape[0]} locations")
    if iterations < 1:
        raise ValueError(f"k-means needs iterations >= 1 (got {iterations})")
    centroids = kmeans_pp_init(points, k, gen)
    scale = float((points * points).sum(1).mean()) + 1e-12
    assign = torch.zeros(points.shape[0], dtype=torch.long, device=points.device)
    done = 0
    for done in range(1, iterations + 1):
        assign = _sq_distances(points, centroids).argmin(1)
        new, counts = _member_means(points, assign, k)
        if _repair_empty(points, assign, new, counts):
            new, counts = _member_means(points, assign, k)
        shift = float(((new - centroids) ** 2).sum(1).mean()) / scale
        centroids = new
        if shift < tol * tol:
            break
    return assign, centroids, done


def cluster_locations(train: WindowSet, num_clusters: int, iterations: int, gen: torch.Generator) -> ClusteredData:
    """Algorithm 3 on the training split; everything stays on the series' device."""
    series = train.series
    x, y, y_mask = normalised_training_series(train)
    feats = location_features(x, len(train), series.spec.input_len)
    assign, _, _ = kmeans(feats, num_clusters, iterations, gen)
    return clustered_from_assignment(train, x, y, y_mask, assign, num_clusters)


def clustered_from_assignment(train: WindowSet, x, y, y_mask, assign: torch.Tensor, k: int) -> ClusteredData:
    """Member means of inputs and (observed) targets per cluster, and the cluster weights."""
    counts = torch.bincount(assign, minlength=k)
    x_c = torch.zeros(x.shape[0], k, x.shape[2], device=x.device).index_add_(1, assign, x) / counts[:, None]
    y_sum = torch.zeros(y.shape[0], k, y.shape[2], device=y.device).index_add_(1, assign, y)
    y_cnt = torch.zeros_like(y_sum).index_add_(1, assign, y_mask.to(y.dtype))
    spec = train.series.spec
    return ClusteredData(
        x=x_c, y=y_sum / y_cnt.clamp_min(1), y_mask=y_cnt > 0,
        starts=torch.as_tensor(train.starts, device=x.device), weights=counts.float() / len(assign),
        assignment=assign, input_len=spec.input_len, output_len=spec.output_len)


def random_locations(train: WindowSet, num_locations: int, rng: np.random.Generator) -> ClusteredData:
    """No clustering (STemDist w/o G&C): a random subset of real locations, equal weights."""
    x, y, y_mask = normalised_training_series(train)
    keep = torch.as_tensor(np.sort(rng.choice(x.shape[1], num_locations, replace=False)), device=x.device)
    assignment = torch.full((x.shape[1],), -1, dtype=torch.long, device=x.device)
    assignment[keep] = torch.arange(num_locations, device=x.device)
    spec = train.series.spec
    return ClusteredData(
        x=x[:, keep], y=y[:, keep], y_mask=y_mask[:, keep], starts=torch.as_tensor(train.starts, device=x.device),
        weights=torch.full((num_locations,), 1.0 / num_locations, device=x.device), assignment=assignment,
        input_len=spec.input_len, output_len=spec.output_len)
