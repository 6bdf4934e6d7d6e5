"""Shared machinery of the static selectors: the proxy model, the features they select on, the base class.

**Proxy model** (DeepCore's ``EarlyTrain``). A fresh copy of the evaluation backbone (``ctx.model_factory``;
``proxy_model`` names another registered model, e.g. ``mlp`` for a cheap one) trained for
``proxy_epochs`` full passes over the training windows with Adam (``proxy_lr``, default 1e-3, as CRAIG's
warm-up here) on the run preset's loss (MAE under ``stprune``, MSE otherwise) and batch size
(``proxy_batch`` overrides it). ``proxy_epochs=None`` takes the preset's: 1 (smoke), 3 (quick), 10
(paper, and stprune, whose Table A.2 gives "Selection epochs 10"); 0 keeps the proxy at initialisation.
Everything happens in ``Pruner.start``, which the harness runs inside the ``condense`` phase, so the
proxy's training and every scoring pass count in the run's ``time_s["condense"]`` and its peak
memory; ``report()`` adds ``selection_info`` to the record with the split of that time
(``proxy_s``: proxy training, ``score_s``: scoring passes, ``select_s``: the selection itself) and what
was used.

**Randomness.** Batch orders come from ``ctx.rng``; model initialisation, dropout masks and any other
draw of torch's global generator run inside ``isolated_rng``: torch's global state is forked and seeded
from ``ctx.torch_generator``, then restored, so the same seed gives the same subset and selection never
shifts the evaluation model's own draws.

**Features** (``FEATURES``), one (n, D) float32 matrix on the series' device:

* ``embedding``: the proxy's penultimate activations, i.e. the input of the last ``nn.Linear`` or
  ``nn.Conv2d`` its forward pass calls (the layer CRAIG's gradients use), at every position (location),
  flattened. DeepCore's geometric selectors use this "embedding recorder" output.
* ``gradient``: the per-window gradient of the proxy's loss w.r.t. that last layer's weight and bias
  (DeepCore's and CRAIG's gradient proxy), from one batched backward to the layer's output z: for a
  Linear or 1x1 Conv2d in closed form, dl/dW = sum_pos g_pos a_pos^T, dl/db = sum_pos g_pos with
  g = dl/dz; for another Conv2d (AGCRN's) with the convolution's weight gradient, sample by sample.
  Its width does not grow with the locations. (A model whose last layer mixes the windows of a batch,
  e.g. TSFE's, has no per-window embedding or gradient: ``ValueError``; use another ``proxy_model``.)
* ``prediction``: the proxy's forecasts (L_out x N x C_t), each output divided by sqrt(2 sigma_o^2) and
  by sqrt(D), sigma_o^2 the proxy's mean squared training residual at that output (horizon, location,
  channel). Squared Euclidean distances between these rows are then the mean over outputs of the
  symmetric KL divergence between the windows' Gaussian predictive distributions N(mu, sigma_o^2),
  the regression form of DeepCore's KL between softmax outputs (CD, Cal).
* ``window``: normalised x and y flattened (``baselines/coreset/features.py``, as K-Center and Herding
  use); no proxy needed.

``feature_dim > 0`` projects wider matrices to that width with a Gaussian random projection
(``ctx.torch_generator``); only K-Means uses one by default (its Lloyd steps cost n k D each).
Wide matrices are capped at ``feature_gib``: ``embedding`` and ``prediction`` then keep a random
subset of positions/locations (``ctx.rng``), ``window`` a random subset of locations. Pairwise work
(k-NN, facility location, K-Means assignment) goes block by block (at most ``BLOCK_FLOATS`` entries,
64 MB), so nothing holds an n x n matrix; time is O(n^2 D) where a method needs all pairs.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import stbench.models  # noqa: F401  (registers the models proxy_model may name)
from baselines.coreset.craig import last_called_layer
from baselines.coreset.features import window_features
from baselines.distill import checks
from stbench import UserError
from stbench.presets import train_config
from stbench.protocols import Pruner
from stbench.registry import MODELS
from stbench.sources import RealSource
from stbench.train import TrainConfig, adam, per_sample_loss, train_step

PROXY_EPOCHS = {"smoke": 1, "quick": 3, "paper": 10, "stprune": 10}
DEFAULT_PROXY_EPOCHS = 10
BLOCK_FLOATS = 1 << 24
FEATURES = ("embedding", "gradient", "prediction", "window")


@dataclass
class ProxyParams:
    """Parameters every selector shares (the proxy model and the feature cap)."""
    proxy_epochs: int | None = None   # None: the preset's (smoke 1, quick 3, paper/stprune 10); 0: untrained
    proxy_model: str = ""             # "": the evaluation model; else a registered model name
    proxy_lr: float = 1e-3            # Adam
    proxy_batch: int = 0              # 0: the preset's batch size
    feature_gib: float = 4.0          # cap on one feature matrix (GiB); wider ones are subsampled
    feature_dim: int = 0              # > 0: random Gaussian projection of wider features to this width

    def __post_init__(self):
        if self.proxy_epochs is not None:
            checks.require(isinstance(self.proxy_epochs, int) and not isinstance(self.proxy_epochs, bool)
                           and self.proxy_epochs >= 0, "proxy_epochs", "an integer >= 0 or None",
                           self.proxy_epochs)
        checks.positive(self, "proxy_lr", "feature_gib")
        checks.at_least(self, 0, "proxy_batch", "feature_dim")
        if self.proxy_model:
            checks.require(self.proxy_model.lower() in MODELS.names(), "proxy_model",
                           "a registered model (" + ", ".join(MODELS.names()) + ")", self.proxy_model)


def check_features(params, name: str = "features", choices: tuple = FEATURES) -> None:
    checks.one_of(params, name, choices)


@dataclass(frozen=True)
class ProxySettings:
    epochs: int
    batch: int
    loss: str
    lr: float
    model: str | None


def proxy_settings(params: ProxyParams, ctx) -> ProxySettings:
    """The proxy's epochs, batch size, loss and model for this run (the preset fills what is unset)."""
    try:
        cfg = train_config(ctx.preset, ctx.dataset_defaults or {})
    except UserError:
        cfg = TrainConfig()
    epochs = PROXY_EPOCHS.get(ctx.preset, DEFAULT_PROXY_EPOCHS) if params.proxy_epochs is None \
        else params.proxy_epochs
    return ProxySettings(epochs=int(epochs), batch=int(params.proxy_batch or cfg.batch_size), loss=cfg.loss,
                         lr=float(params.proxy_lr), model=params.proxy_model or None)


@contextlib.contextmanager
def isolated_rng(ctx):
    """torch's global generator forked, seeded from ``ctx.torch_generator``, and restored on exit."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=ctx.torch_generator))
    device = torch.device(ctx.device)
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def row_blocks(rows: int, cols: int):
    """Slices of ``rows`` such that a (block x cols) matrix holds at most BLOCK_FLOATS entries."""
    step = max(1, BLOCK_FLOATS // max(1, cols))
    return [slice(b, min(b + step, rows)) for b in range(0, rows, step)]


def sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) squared Euclidean distances."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.T).clamp_min(0)


def top_k(scores, k: int, rng: np.random.Generator) -> np.ndarray:
    """Ids of the ``k`` highest scores; ties in random order (``rng``), NaN ranks last."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    return np.lexsort((rng.random(len(s)), -s))[:k]


def _subset(total: int, keep: int, rng: np.random.Generator) -> np.ndarray | None:
    """None (all) when ``keep`` covers ``total``, else ``keep`` sorted random ids."""
    return None if keep >= total else np.sort(rng.choice(total, size=keep, replace=False))


def last_layer(model: nn.Module, source: RealSource) -> nn.Module:
    """The last ``nn.Linear`` or ``nn.Conv2d`` that a forward pass on one window calls."""
    layer = last_called_layer(model, source)
    if layer is None:
        raise ValueError(f"{type(model).__name__} calls no nn.Linear or nn.Conv2d; embedding and gradient "
                         "features need one as its last layer (choose another proxy_model or features)")
    return layer


def _pointwise(layer: nn.Module) -> bool:
    """A Linear, or a Conv2d acting on each position alone (1x1, stride 1, no padding, one group)."""
    return not isinstance(layer, nn.Conv2d) or (layer.kernel_size, layer.stride, layer.padding, layer.groups) == (
        (1, 1), (1, 1), (0, 0), 1)


def layer_gradients(layer: nn.Module, a: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """(B, G) per-sample gradients of the layer's weight (then bias) from its input ``a`` and the loss
    gradient ``dz`` at its output (each sample's loss depends on its own output only). A pointwise
    layer: dl/dW = sum_pos g_pos a_pos^T, one batched product; another Conv2d: the convolution's
    weight gradient (``torch.nn.grad.conv2d_weight``) sample by sample."""
    if _pointwise(layer):
        a, g = _positions_last(layer, a), _positions_last(layer, dz)
        parts = [torch.bmm(g.transpose(1, 2), a).flatten(1)]
        if layer.bias is not None:
            parts.append(g.sum(dim=1))
        return torch.cat(parts, dim=1)
    weight = torch.stack([torch.nn.grad.conv2d_weight(a[i:i + 1], layer.weight.shape, dz[i:i + 1], layer.stride,
                                                      layer.padding, layer.dilation, layer.groups)
                          for i in range(a.shape[0])]).flatten(1)
    return weight if layer.bias is None else torch.cat([weight, dz.sum(dim=(2, 3))], dim=1)


def _positions_last(layer: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """(B, positions, features) view of a Linear's (B, ..., F) or a 1x1 Conv2d's (B, F, H, W) tensor."""
    if isinstance(layer, nn.Conv2d):
        return t.flatten(2).transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


@contextlib.contextmanager
def frozen_eval(model: nn.Module):
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


class Proxy:
    """One proxy model over the training windows: build, train a few epochs, read features from it."""

    def __init__(self, ctx, settings: ProxySettings, source: RealSource):
        self.ctx, self.settings, self.source = ctx, settings, source
        with isolated_rng(ctx):
            self.model = ctx.model_factory(source.train.series.num_locations, settings.model).to(ctx.device)
        self._layer = None

    @property
    def layer(self) -> nn.Module:
        if self._layer is None:
            self._layer = last_layer(self.model, self.source)
        return self._layer

    def fit(self, ids=None, epochs: int | None = None, on_batch=None) -> None:
        """``epochs`` (default: the settings') passes over ``ids`` (default: all windows) in random
        order; ``on_batch(epoch, ids, per_sample_losses)`` sees each batch's training losses."""
        s = self.settings
        ids = np.arange(len(self.source)) if ids is None else np.asarray(ids)
        epochs = s.epochs if epochs is None else epochs
        cfg = TrainConfig(batch_size=s.batch, lr=s.lr, loss=s.loss)
        opt = adam(self.model.parameters(), s.lr)
        self.model.train()
        with isolated_rng(self.ctx):
            for epoch in range(epochs):
                order = ids[self.ctx.rng.permutation(len(ids))]
                for begin in range(0, len(order), s.batch):
                    batch = order[begin:begin + s.batch]
                    losses = train_step(self.model, opt, self.source, batch, None, cfg, self.ctx.torch_generator)
                    if on_batch is not None:
                        on_batch(epoch, batch, losses)
        self.model.eval()

    def passes(self, ids=None, *, gradients: bool = False, embeddings: bool = False):
        """Per batch of ``ids`` (eval mode, frozen parameters): a dict with ``ids``, ``pred``
        (B, L_out, N, C_t), normalised ``y`` and ``mask``, and on request ``grad`` (B, G), the
        last-layer gradient of the proxy's loss, and ``emb`` (B, P, F), the last layer's input."""
        ids = np.arange(len(self.source)) if ids is None else np.asarray(ids)
        layer, captured = (self.layer if gradients or embeddings else None), {}

        def hook(module, inputs, output):
            captured["a"] = inputs[0].detach()
            if gradients:
                captured["z"] = output.detach().requires_grad_()
                return captured["z"]
            return None

        with frozen_eval(self.model):
            handle = layer.register_forward_hook(hook) if layer is not None else None
            try:
                for begin in range(0, len(ids), self.settings.batch):
                    batch = ids[begin:begin + self.settings.batch]
                    x, y, mask = self.source.batch(batch)
                    out = {"ids": batch, "y": y, "mask": mask}
                    with torch.set_grad_enabled(gradients):
                        pred = self.model(x, self.source.loc_input)
                        if layer is not None and captured["a"].shape[0] != len(batch):
                            raise ValueError(f"the last layer of {type(self.model).__name__} does not keep the "
                                             "batch as its first axis; per-window features need one that does")
                        if gradients:
                            loss = per_sample_loss(pred, y, mask, None, self.settings.loss).sum()
                            (dz,) = torch.autograd.grad(loss, captured["z"])
                            out["grad"] = layer_gradients(layer, captured["a"], dz)
                    if embeddings:
                        out["emb"] = _positions_last(layer, captured["a"])
                    out["pred"] = pred.detach()
                    yield out
            finally:
                if handle is not None:
                    handle.remove()

    def gradients(self, ids=None) -> torch.Tensor:
        """(len(ids), G) last-layer gradients (see ``passes``)."""
        return torch.cat([b["grad"] for b in self.passes(ids, gradients=True)])

    def last_layer_step(self, step: torch.Tensor):
        """Context: the last layer's weight and bias moved by ``-step`` (laid out as ``grad``)."""
        layer = self.layer
        w = layer.weight.numel()

        @contextlib.contextmanager
        def moved():
            saved = [p.detach().clone() for p in (layer.weight, layer.bias) if p is not None]
            with torch.no_grad():
                layer.weight -= step[:w].view_as(layer.weight)
                if layer.bias is not None:
                    layer.bias -= step[w:].view_as(layer.bias)
            try:
                yield
            finally:
                with torch.no_grad():
                    layer.weight.copy_(saved[0])
                    if layer.bias is not None:
                        layer.bias.copy_(saved[1])
        return moved()

    def _probe(self, embeddings: bool) -> dict:
        """The pass over one window (its shapes size the feature matrices)."""
        with contextlib.closing(self.passes(np.arange(1), embeddings=embeddings)) as batches:
            return next(batches)

    def embeddings(self, rng: np.random.Generator, gib: float) -> tuple[torch.Tensor, int]:
        """(n, P' F) last-layer inputs and P', the positions kept under the ``gib`` cap."""
        n = len(self.source)
        probe = self._probe(True)["emb"]
        positions, width = probe.shape[1], probe.shape[2]
        keep = max(1, min(positions, int(gib * 2 ** 30) // (4 * n * width)))
        subset = _subset(positions, keep, rng)
        index = None if subset is None else torch.as_tensor(subset, device=probe.device)
        out = torch.empty(n, keep * width, device=probe.device)
        for b in self.passes(embeddings=True):
            emb = b["emb"] if index is None else b["emb"][:, index]
            out[torch.as_tensor(b["ids"], device=out.device)] = emb.flatten(1)
        return out, keep

    def whitened_predictions(self, rng: np.random.Generator, gib: float) -> tuple[torch.Tensor, int]:
        """(n, L_out N' C_t) forecasts over N' locations (the ``gib`` cap), each output divided by
        sqrt(2 sigma_o^2 D): squared distances are mean symmetric Gaussian KL divergences (module doc)."""
        n = len(self.source)
        probe = self._probe(False)["pred"]
        horizon, locations, channels = probe.shape[1:]
        keep = max(1, min(locations, int(gib * 2 ** 30) // (4 * n * horizon * channels)))
        subset = _subset(locations, keep, rng)
        index = None if subset is None else torch.as_tensor(subset, device=probe.device)
        preds = torch.empty(n, horizon, keep, channels, device=probe.device)
        sq = torch.zeros(horizon, keep, channels, dtype=torch.float64, device=probe.device)
        count = torch.zeros_like(sq)
        for b in self.passes():
            pred, y, mask = b["pred"], b["y"], b["mask"]
            if index is not None:
                pred, y, mask = pred[:, :, index], y[:, :, index], mask[:, :, index]
            preds[torch.as_tensor(b["ids"], device=preds.device)] = pred
            m = mask.to(torch.float64)
            sq += (((pred - y).double() ** 2) * m).sum(0)
            count += m.sum(0)
        var = sq / count.clamp_min(1)
        observed = count > 0
        fill = var[observed].mean() if observed.any() else torch.ones((), dtype=torch.float64, device=var.device)
        var = torch.where(observed, var, fill).clamp_min(1e-6).float()
        d = horizon * keep * channels
        return (preds / torch.sqrt(2 * var * d)).flatten(1), keep


class StaticSelector(Pruner):
    """A subset of round(r * n) training windows chosen once in ``start``; every epoch visits it with
    unit weights. Subclasses implement ``select(train, keep) -> ids`` (``keep`` distinct window ids)
    and use ``new_proxy``, ``features`` and ``phase`` (time split reported in ``selection_info``)."""

    ignores_losses = True   # a fixed subset: the trainer skips update (and its timing)

    @dataclass
    class Params(ProxyParams):
        pass

    def start(self, num_samples, budget, ctx) -> None:
        super().start(num_samples, budget, ctx)
        train = ctx.series.split("train")
        if len(train) != num_samples:
            raise ValueError(f"{type(self).__name__} selects among the {len(train)} training windows, "
                             f"asked for {num_samples}")
        keep = num_samples if budget is None else max(1, round(budget.ratio * num_samples))
        self.keep, self.times, self.info = keep, {}, {}
        self.proxies, self.proxy_epochs_run = 0, 0
        self.settings = proxy_settings(self.params, ctx)
        self._source = None
        started = ctx.meter.clock()
        ids = np.arange(num_samples) if keep >= num_samples else np.asarray(self.select(train, keep))
        chosen = np.unique(ids.astype(np.int64))
        if len(chosen) != keep or len(ids) != keep or chosen[0] < 0 or chosen[-1] >= num_samples:
            raise RuntimeError(f"{type(self).__name__} selected {len(ids)} ids ({len(chosen)} distinct in range), "
                               f"expected {keep} distinct training windows")
        self.ids = chosen
        self.times["total_s"] = ctx.meter.clock() - started

    @abc.abstractmethod
    def select(self, train, keep: int) -> np.ndarray:
        """``keep`` distinct training-window ids (each selector's rule)."""

    def epoch(self, epoch: int, num_epochs: int):
        return self.ids, None

    # -- helpers for subclasses -----------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str):
        """Add the time inside to ``selection_info["time_s"][name + "_s"]`` (synchronised clocks)."""
        start = self.ctx.meter.clock()
        try:
            yield
        finally:
            key = f"{name}_s"
            self.times[key] = self.times.get(key, 0.0) + self.ctx.meter.clock() - start

    def source(self, train) -> RealSource:
        if self._source is None:
            self._source = RealSource(train)
        return self._source

    def new_proxy(self, train, fit_ids=None, on_batch=None) -> Proxy:
        """A fresh proxy trained for the run's proxy epochs on ``fit_ids`` (default: every window)."""
        with self.phase("proxy"):
            proxy = Proxy(self.ctx, self.settings, self.source(train))
            proxy.fit(fit_ids, on_batch=on_batch)
        self.proxies += 1
        self.proxy_epochs_run += self.settings.epochs
        return proxy

    def features(self, kind: str, train, proxy: Proxy | None = None) -> torch.Tensor:
        """The (n, D) ``kind`` feature matrix (see the module doc); trains a proxy when one is needed
        and none is given. Records the kind and width in ``selection_info``."""
        gib = self.params.feature_gib
        if kind == "window":
            with self.phase("score"):
                feats = window_features(train, self.ctx.rng, gib)
        else:
            proxy = proxy or self.new_proxy(train)
            with self.phase("score"):
                if kind == "embedding":
                    feats, kept = proxy.embeddings(self.ctx.rng, gib)
                    self.info["embedding_positions"] = kept
                elif kind == "prediction":
                    feats, kept = proxy.whitened_predictions(self.ctx.rng, gib)
                    self.info["prediction_locations"] = kept
                elif kind == "gradient":
                    feats = proxy.gradients()
                else:
                    raise ValueError(f"unknown features {kind!r}; choose one of {', '.join(FEATURES)}")
        dim = self.params.feature_dim
        if dim and feats.shape[1] > dim:
            with self.phase("score"):
                feats = random_projection(feats, dim, self.ctx.torch_generator)
        self.info.setdefault("features", {})[kind] = int(feats.shape[1])
        return feats

    def report(self) -> dict:
        """``selection_time_s`` (all of ``start``) and ``selection_info``: the subset size and its
        SHA-256 (of the sorted int64 ids), the proxies trained, what was used, and the time split."""
        info = {"kept": int(self.keep), "subset_sha256": hashlib.sha256(self.ids.tobytes()).hexdigest(),
                "proxies": self.proxies, "proxy_epochs": self.settings.epochs,
                "proxy_epochs_run": self.proxy_epochs_run, "proxy_model": self.settings.model or "evaluation",
                **self.info, "time_s": dict(self.times)}
        return {"selection_time_s": self.times["total_s"], "selection_info": info}


def random_projection(features: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """(n, dim) = features @ R, R with i.i.d. N(0, 1/dim) entries (Johnson-Lindenstrauss: squared
    distances and inner products are preserved in expectation), drawn from ``gen`` in column blocks."""
    out = torch.zeros(features.shape[0], dim, device=features.device)
    for rows in row_blocks(features.shape[1], dim):
        r = torch.randn(rows.stop - rows.start, dim, generator=gen) / dim ** 0.5
        out += features[:, rows] @ r.to(features.device)
    return out


def cosine_unit(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (zero rows stay zero), so s_ij = (1 + u_i . u_j) / 2 lies in [0, 1]."""
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
