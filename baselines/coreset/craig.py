"""CRAIG (Mirzasoleiman, Bilmes & Leskovec 2020): weighted coresets whose gradients match the full data's.

* Gradient proxies: each window's gradient of its loss (the trainer's masked MSE in normalised units)
  w.r.t. the parameters of the evaluation model's last layer only, in eval mode, as the issue and the
  reference (MTGNN's ``end_conv_2`` in ``coreset/craig.py``) prescribe. CRAIG's own deep-network proxy
  is the gradient w.r.t. that layer's output (after Katharopoulos & Fleuret 2018); the parameter
  gradient used here is that output gradient times the penultimate activations, summed over positions.
* Selection: facility location F(S) = sum_i max_{j in S} s_ij maximised by lazy greedy (Minoux 1978),
  and weights gamma_j = number of windows whose most similar pick is j.
* Online: the evaluation model first trains ``warmup_epochs`` on the full data (Adam, lr 1e-3), then
  the set is picked with it; both happen in ``condense``, so they count as CRAIG's condense cost.
  During evaluation training the set is re-selected every ``reselect_every`` epochs with the model
  being trained (CRAIG re-selects during training; the reference's ``-c 10``); 0 keeps the first set.

Weights are the counts scaled to mean 1 for the trainer's loss = mean_i w_i l_i, as the reference
normalises them to sum to the budget; the raw counts gamma and the split of the condense time into
warm-up and selection are kept in ``CondensedSet.info`` (the run record's ``condense_info``).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS
from stbench.sources import RealSource
from stbench.train import TrainConfig, adam, per_sample_loss, train_step

SIMILARITIES = ("euclidean", "cosine")
BLOCK_FLOATS = 1 << 24   # a (rows x M) similarity block holds at most 16M floats (64 MB)
WARMUP_LR = 1e-3
LAZY_CANDIDATES = 64   # stale heap entries re-evaluated together (an M x 64 similarity block)


# --- gradient proxies ----------------------------------------------------------------------------

def last_called_layer(model: nn.Module, source: RealSource) -> nn.Module | None:
    """The last ``nn.Linear`` or ``nn.Conv2d`` that a forward pass on one window calls (None: none)."""
    calls = []
    hooks = [m.register_forward_hook(lambda mod, inputs, output: calls.append(mod))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(source.batch(np.arange(1))[0], source.loc_input)
    finally:
        for hook in hooks:
            hook.remove()
    return calls[-1] if calls else None


def final_layer(model: nn.Module, source: RealSource) -> nn.Module:
    """The last ``nn.Linear`` or ``nn.Conv2d`` that a forward pass on one window calls."""
    layer = last_called_layer(model, source)
    if layer is None:
        raise ValueError(f"{type(model).__name__} calls no nn.Linear or nn.Conv2d; CRAIG needs one as its last layer")
    if isinstance(layer, nn.Conv2d) and (layer.kernel_size, layer.stride, layer.padding, layer.groups) != (
            (1, 1), (1, 1), (0, 0), 1):
        raise ValueError(f"CRAIG's closed-form gradient needs a final nn.Linear or plain 1x1 nn.Conv2d, got {layer}")
    return layer


def _positions_last(layer: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, positions, features) view of a Linear's (B, ..., F) or a 1x1 Conv2d's (B, F, H, W) tensor."""
    if isinstance(layer, nn.Conv2d):
        return t.flatten(2).transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _batch_gradients(model, layer, captured: dict, source: RealSource, ids: np.ndarray) -> torch.Tensor:
    """(B, P) per-window gradients of the last layer's weight (and bias) for one batch.

    For z = W a + b at every output position, dl_i/dW = sum_pos g_pos a_pos^T and dl_i/db = sum_pos g_pos
    with g = dl_i/dz; g comes from one backward of sum_i l_i to z, since window i's loss depends only on
    its own z_i. Only the last layer's output needs grad, so the rest of the forward builds no graph.
    """
    x, y, mask = source.batch(ids)
    with torch.enable_grad():
        loss = per_sample_loss(model(x, source.loc_input), y, mask, None, "mse").sum()
        (dz,) = torch.autograd.grad(loss, captured["z"])
    a, g = _positions_last(layer, captured["a"]), _positions_last(layer, dz)
    parts = [torch.bmm(g.transpose(1, 2), a).flatten(1)]
    if layer.bias is not None:
        parts.append(g.sum(dim=1))
    return torch.cat(parts, dim=1)


@contextmanager
def _frozen_eval(model: nn.Module):
    """Eval mode and no parameter gradients inside; the previous mode and flags are restored after."""
    flags, was_training = [p.requires_grad for p in model.parameters()], model.training
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


def last_layer_gradients(model: nn.Module, source: RealSource, batch_size: int) -> torch.Tensor:
    """(M, P) per-window last-layer gradients for every window of ``source``, closed form (see above).

    A forward hook swaps the last layer's output for a leaf that requires grad, so with the parameters
    frozen only the loss's dependence on that output is differentiated.
    """
    captured = {}

    def swap(module, inputs, output):
        captured["a"], captured["z"] = inputs[0].detach(), output.detach().requires_grad_()
        return captured["z"]

    with _frozen_eval(model):
        layer = final_layer(model, source)
        handle = layer.register_forward_hook(swap)
        try:
            ids = np.arange(len(source))
            return torch.cat([_batch_gradients(model, layer, captured, source, ids[b:b + batch_size])
                              for b in range(0, len(ids), batch_size)])
        finally:
            handle.remove()


# --- facility location ---------------------------------------------------------------------------

class Similarity:
    """s_ij between gradient proxies, computed on demand for index blocks (never all M x M at once).

    ``euclidean`` (CRAIG): s_ij = c - ||g_i - g_j||, i.e. CRAIG's F(S) = L({s0}) - L(S + {s0}) with
    L(S) = sum_i min_{j in S} d_ij and an auxiliary s0 at distance c >= every d_ij. Greedy picks and
    weights do not depend on c once it bounds all distances (a gain is M c - sum_i d_ij at the first
    pick, the same ranking for any c, and sum_i max(0, d_i - d_ij) after it), so c is the bound
    2 max_i ||g_i|| and needs no pass for the maximum distance. ``cosine``: (cos + 1) / 2, the reference's.
    """

    def __init__(self, grads: torch.Tensor, kind: str):
        if kind not in SIMILARITIES:
            raise ValueError(f"similarity {kind!r} is not one of {SIMILARITIES}")
        self.kind = kind
        self.g = grads if kind == "euclidean" else grads / grads.norm(dim=1, keepdim=True).clamp_min(1e-12)
        self.sq = self.g.pow(2).sum(dim=1)
        self.top = 2 * float(self.sq.max().sqrt())

    def __call__(self, rows, cols) -> torch.Tensor:
        dot = self.g[rows] @ self.g[cols].T
        if self.kind == "cosine":
            return (dot + 1) / 2
        return self.top - (self.sq[rows, None] + self.sq[None, cols] - 2 * dot).clamp_min(0).sqrt()


def _row_blocks(m: int, cols: int):
    """Slices of rows such that a (rows x cols) block holds at most BLOCK_FLOATS entries."""
    step = max(1, BLOCK_FLOATS // cols)
    return (slice(b, min(b + step, m)) for b in range(0, m, step))


def _lazy_greedy(sim: Similarity, gains: list[float], k: int, device) -> list[int]:
    """Greedy picks with lazy evaluation (Minoux 1978): a max-heap of stale gains, which bound the fresh
    ones by submodularity. The top LAZY_CANDIDATES entries are re-evaluated together (one M x 64
    similarity block, fewer columns when that would pass BLOCK_FLOATS); the best fresh gain is taken
    when it beats every stale bound left (ties: lowest id), and the others go back with fresh gains.
    """
    heap = [(-gain, j) for j, gain in enumerate(gains)]
    heapq.heapify(heap)
    best = torch.zeros(len(gains), device=device)   # max_{j in S} s_ij, 0 for the empty set
    width = max(1, min(LAZY_CANDIDATES, BLOCK_FLOATS // len(gains)))
    picks = []
    while len(picks) < k:
        batch = [heapq.heappop(heap)[1] for _ in range(min(width, len(heap)))]
        columns = sim(slice(None), batch)
        fresh = (columns - best[:, None]).clamp_min(0).sum(dim=0, dtype=torch.float64).tolist()
        top = max(range(len(batch)), key=lambda i: (fresh[i], -batch[i]))
        taken = None
        if not heap or fresh[top] >= -heap[0][0]:
            taken = batch[top]
            picks.append(taken)
            best = torch.maximum(best, columns[:, top])
        for gain, j in zip(fresh, batch):
            if j != taken:
                heapq.heappush(heap, (-gain, j))
    return picks


def facility_location(grads: torch.Tensor, k: int, similarity: str = "euclidean") -> tuple[torch.Tensor, torch.Tensor]:
    """(picks in greedy order, gamma counts) maximising F(S) = sum_i max_{j in S} s_ij greedily.

    Memory beyond ``grads`` is O(M) plus one block of at most BLOCK_FLOATS similarities (64 MB): the
    initial gains (column sums), the lazy re-evaluations and the final assignment go block by block.
    """
    m = grads.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"CRAIG needs 1 <= k <= {m}, got k={k}")
    sim = Similarity(grads, similarity)
    sums = torch.zeros(m, dtype=torch.float64, device=grads.device)
    for rows in _row_blocks(m, m):
        sums += sim(rows, slice(None)).sum(dim=0, dtype=torch.float64)
    chosen = torch.tensor(_lazy_greedy(sim, sums.tolist(), k, grads.device), dtype=torch.long, device=grads.device)
    counts = torch.zeros(k, dtype=torch.long, device=grads.device)
    for rows in _row_blocks(m, k):
        counts += torch.bincount(sim(rows, chosen).argmax(dim=1), minlength=k)
    return chosen, counts


# --- the method ----------------------------------------------------------------------------------

def _mean_one(counts: np.ndarray, num_windows: int) -> np.ndarray:
    """gamma scaled to mean 1 over the k picks (the counts sum to M): gamma * k / M."""
    return (counts * (len(counts) / num_windows)).astype(np.float32)


class OnlineSelection:
    """Schedule: the current CRAIG set and weights every epoch, re-selected every ``every`` epochs.

    It re-selects from gradients, not from training losses, so the trainer skips ``update``."""

    ignores_losses = True

    def __init__(self, ids: np.ndarray, weights: np.ndarray, every: int,
                 reselect: Callable[[], tuple[np.ndarray, np.ndarray]]):
        self.ids, self.weights, self.every, self.reselect = ids, weights, every, reselect

    def epoch(self, epoch: int, num_epochs: int):
        if self.every and epoch and epoch % self.every == 0:
            self.ids, self.weights = self.reselect()
        return self.ids, self.weights


@METHODS.register("craig", family="coreset", description="CRAIG: last-layer gradient facility location, online")
class Craig(Condenser):
    uses_eval_model = True   # warms up and selects with the evaluation model: its artifact is keyed by it

    @dataclass
    class Params:
        warmup_epochs: int = 1       # full-data training of the model before the first selection
        warmup_batch: int = 64
        reselect_every: int = 10     # epochs between re-selections during training; 0: select once
        grad_batch: int = 32         # windows per gradient-proxy batch (the reference's grad batch)
        similarity: str = "euclidean"   # euclidean (CRAIG paper) | cosine (reference)

        def __post_init__(self):
            if self.similarity not in SIMILARITIES:
                raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)} (got {self.similarity!r})")
            for name in ("warmup_epochs", "reselect_every"):
                if getattr(self, name) < 0:
                    raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
            for name in ("warmup_batch", "grad_batch"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")

    def _select(self, model, source: RealSource, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window ids, weights of mean 1, raw counts gamma) from ``model``'s last-layer gradients."""
        grads = last_layer_gradients(model, source, self.params.grad_batch)
        chosen, counts = facility_location(grads, k, self.params.similarity)
        counts = counts.cpu().numpy()
        return chosen.cpu().numpy(), _mean_one(counts, len(source)), counts

    def _warm_up(self, model, source: RealSource, ctx) -> None:
        """``warmup_epochs`` of full-data training (Adam, lr 1e-3) with the trainer's step."""
        opt = adam(model.parameters(), WARMUP_LR)
        cfg = TrainConfig(batch_size=self.params.warmup_batch, lr=WARMUP_LR)
        model.train()
        for _ in range(self.params.warmup_epochs):
            order = ctx.rng.permutation(len(source))
            for begin in range(0, len(order), cfg.batch_size):
                train_step(model, opt, source, order[begin:begin + cfg.batch_size], None, cfg, ctx.torch_generator)

    def condense(self, train, budget, ctx) -> CondensedSet:
        """Warm-up, then the first selection; ``info`` keeps the raw counts gamma and both times."""
        k, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        source = RealSource(train)
        model = ctx.model_factory(train.series.num_locations)
        start = ctx.meter.clock()
        self._warm_up(model, source, ctx)
        warmed = ctx.meter.clock()
        ids, weights, counts = self._select(model, source, k)
        info = {"gamma": counts.tolist(), "warmup_s": warmed - start, "select_s": ctx.meter.clock() - warmed}
        return CondensedSet(indices=ids, sample_weight=torch.from_numpy(weights), info=info)

    def training_plan(self, condensed, train, model, ctx):
        """All real windows as the source; the schedule serves the CRAIG set and re-selects online."""
        source = RealSource(train)
        weights = np.asarray(torch.as_tensor(condensed.sample_weight).cpu(), dtype=np.float32)
        k = len(condensed.indices)
        schedule = OnlineSelection(np.asarray(condensed.indices), weights, self.params.reselect_every,
                                   lambda: self._select(model, source, k)[:2])
        return source, schedule
