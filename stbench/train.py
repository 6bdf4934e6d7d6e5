"""One trainer for every method: full data, a condensed set, or a pruner all arrive as a Schedule.

Each epoch the schedule names the sample ids to visit and their loss weights; the trainer shuffles
them with the run's generator, trains on batches, and feeds each batch's per-sample losses back. The
loss convention is single: ``loss = mean_i(w_i * l_i)`` where ``l_i`` is sample i's masked mean error
in normalised target units (MSE or MAE), weighted per location when the set carries location weights.
With ``location_subsets = K > 1`` every batch is split into K random location subsets and the model
takes one step per subset (STemDist Algorithm 2). Every ``eval_every`` epochs the model is scored on
the full validation split with all original locations; the best checkpoint (``select="best"``) or the
final model (``select="last"``: no early stopping) is tested at the end.

A schedule with ``wants_error_matrix = True`` (ST-Prune) is called as
``update(ids, per_sample_loss, errors=E)`` with E (B, L_out, N) the detached absolute error of the
training forward pass in normalised target units, averaged over the observed target channels and NaN
where no channel is observed; every other schedule gets ``update(ids, per_sample_loss)``, except those
with ``ignores_losses = True`` (fixed sets, CRAIG's online selection), which get no ``update`` at all.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from stbench.data.windows import WindowSet, to_device
from stbench.eval_batch import eval_batch
from stbench.metrics import StreamingMetrics, target_mean
from stbench.protocols import RunContext


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"          # adam | sgd | muon (Muon on 2-D weights, Adam on the rest)
    momentum: float = 0.9            # sgd only
    weight_decay: float = 0.0
    lr_schedule: str = "constant"    # constant | cosine (per epoch, so it does not depend on epoch length)
    lr_min: float = 0.0              # cosine only: the learning rate reached at the last epoch
    loss: str = "mse"                # mse | mae, in normalised target units
    grad_clip: float | None = None
    eval_every: int = 5
    eval_batch_size: int = 64        # validation/test windows per batch (with eval_memory_mb = 0)
    eval_memory_mb: float = 0.0      # > 0: validation/test batches sized to this activation budget (``eval_batch``)
    select_metric: str = "rel_rmse"
    location_subsets: int = 1
    select: str = "best"             # best: the best validated checkpoint | last: the final model
    amp: str = "off"                 # off | bf16: training forward passes under bfloat16 autocast (``autocast``)


# Fields added after the first stores, with the value every run recorded before them used. A run's config
# keeps them only when set otherwise (so earlier run ids stay valid); the report's audit reads them back.
NEW_TRAIN_FIELDS = {"amp": "off", "eval_memory_mb": 0.0}


# --- training and evaluation -------------------------------------------------------------------

@dataclass
class TrainResult:
    best_epoch: int
    val: dict
    test: dict
    epoch_times: list = field(default_factory=list)
    schedule_times: list = field(default_factory=list)   # per epoch: time inside the schedule (selection, scoring)
    visits_per_epoch: list = field(default_factory=list)
    optimizer_steps: int = 0
    val_history: list = field(default_factory=list)
    test_windows: int = 0       # windows the test pass scored (counted by the loop, not taken from the split)
    test_batches: int = 0       # batches it scored them in
    eval_batch: int = 0         # windows per validation/test batch (``eval_batch``)


def per_sample_loss(pred, y, mask, location_weight, kind: str) -> torch.Tensor:
    err = (pred - y) ** 2 if kind == "mse" else (pred - y).abs()
    m = mask.to(pred.dtype)
    if location_weight is not None:
        m = m * (location_weight / location_weight.mean()).view(1, 1, -1, 1)
    return (err * m).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1)


def error_matrix(pred, y, mask) -> torch.Tensor:
    """Detached per-sample absolute error (B, L_out, N): mean over observed target channels, NaN if none."""
    m = mask.to(pred.dtype)
    count = m.sum(dim=3)
    err = ((pred.detach() - y).abs() * m).sum(dim=3) / count.clamp(min=1)
    return err.masked_fill(count == 0, float("nan"))


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """torch.optim.Adam with its fused kernel: one pass over every tensor instead of a Python loop of
    small ops per tensor (a step over MTGNN's 106 tensors: 0.65 ms instead of 3.3 ms on one CPU thread).
    The update is Adam's; it differs from the per-tensor loop only in float rounding (about 1 ulp)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


class MuonAdam(torch.optim.Optimizer):
    """Muon (torch.optim.Muon, Jordan et al. 2024) on the 2-D weight matrices, Adam on every other
    parameter (biases, norms, convolution kernels), as Muon is defined for matrices only. Muon's
    ``adjust_lr_fn="match_rms_adamw"`` (Liu et al. 2025) scales its update to Adam's RMS, so one learning
    rate serves both. ``param_groups`` are the two optimisers' own, so a learning-rate scheduler
    reaches both."""

    def __init__(self, params, lr: float, weight_decay: float):
        params = [p for p in params if p.requires_grad]
        matrices, rest = [p for p in params if p.ndim == 2], [p for p in params if p.ndim != 2]
        super().__init__(params, {"lr": lr})
        self.parts = ([torch.optim.Muon(matrices, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")]
                      if matrices else []) + ([adam(rest, lr, weight_decay)] if rest else [])
        self.param_groups = [g for part in self.parts for g in part.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        for part in self.parts:
            part.step()


def _optimizer(model, cfg: TrainConfig):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "muon":
        return MuonAdam(model.parameters(), cfg.lr, cfg.weight_decay)
    return adam(model.parameters(), cfg.lr, cfg.weight_decay)


def _location_subsets(n: int, k: int, gen: torch.Generator, device) -> list[torch.Tensor | None]:
    if k <= 1:
        return [None]
    perm = to_device(torch.randperm(n, generator=gen), device)
    return [part for part in torch.tensor_split(perm, min(k, n)) if len(part)]


AMP_MODES = ("off", "bf16")


def autocast(mode: str, device: torch.device):
    """The training forward's precision: ``off`` (float32) or ``bf16``, torch.autocast to bfloat16 on
    the model's device (the matrix products and convolutions in bfloat16, reductions, norms and the
    loss in float32). bfloat16 keeps float32's range, so no loss scaling is needed; float16, which
    would need a gradient scaler, is not offered. Validation and test passes always run in float32."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16")


def train_step(model, opt, source, ids, weights, cfg: TrainConfig, gen: torch.Generator, errors: bool = False):
    """One batch: a step per location subset; returns the batch's per-sample losses (mean over subsets).

    With ``errors=True`` returns ``(losses, E)``, E the (B, L_out, N) ``error_matrix``; under location
    subsets each location's errors come from the step on its own subset.
    """
    x, y, mask = source.batch(ids)
    w = None if weights is None else to_device(weights, x.device)
    losses = torch.zeros(len(ids), device=x.device)
    err = torch.full(y.shape[:3], float("nan"), device=x.device) if errors else None
    subsets = _location_subsets(x.shape[2], cfg.location_subsets, gen, x.device)
    for subset in subsets:
        xs, ys, ms, li = x, y, mask, source.loc_input
        lw = source.location_weight
        if subset is not None:
            xs, ys, ms, li = x[:, :, subset], y[:, :, subset], mask[:, :, subset], li[subset]
            lw = None if lw is None else lw[subset]
        with autocast(cfg.amp, x.device):
            pred = model(xs, li)
        pred = pred.float()
        sample_loss = per_sample_loss(pred, ys, ms, lw, cfg.loss)
        if err is not None:
            err[:, :, slice(None) if subset is None else subset] = error_matrix(pred, ys, ms)
        loss = sample_loss.mean() if w is None else (w * sample_loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses += sample_loss.detach() / len(subsets)
    return losses if err is None else (losses, err)


@torch.inference_mode()
def evaluate(model, windows: WindowSet, loc_input: torch.Tensor, batch_size: int,
             y_mean: float | None = None) -> dict:
    """Stream metrics over every window and every original location of a split."""
    return _evaluate(model, windows, loc_input, batch_size, y_mean)[0]


@torch.inference_mode()
def _evaluate(model, windows: WindowSet, loc_input: torch.Tensor, batch_size: int,
              y_mean: float | None = None) -> tuple[dict, int, int]:
    """(metrics, windows scored, batches scored): ``evaluate`` with a count of what the loop saw."""
    model.eval()
    series = windows.series
    if y_mean is None:
        y_mean = target_mean(windows.iter_batches(batch_size))
    metrics = StreamingMetrics(series.spec.output_len, y_mean, series.device)
    seen = batches = 0
    for batch in windows.iter_batches(batch_size):
        pred = series.unscale_target(model(batch.x, loc_input))
        metrics.update(pred, batch.y, batch.mask)
        seen += int(batch.x.shape[0])
        batches += 1
    model.train()
    return metrics.compute(), seen, batches


def score_test(model, test: WindowSet, eval_loc_input: torch.Tensor, cfg: TrainConfig, ctx: RunContext,
               result: TrainResult) -> None:
    """The test pass (phase ``evaluate``) of the model as it is: every test window, every original
    location, no batch dropped; fills ``result.test`` and the counts ``test_windows``/``test_batches``."""
    with ctx.meter.phase("evaluate"):
        result.eval_batch = result.eval_batch or eval_batch(model, test, eval_loc_input, cfg)
        result.test, result.test_windows, result.test_batches = _evaluate(model, test, eval_loc_input,
                                                                          result.eval_batch)


def fit(model, source, schedule, cfg: TrainConfig, val: WindowSet, test: WindowSet | None,
        eval_loc_input: torch.Tensor, ctx: RunContext, progress=None) -> TrainResult:
    """Train, select the checkpoint (``cfg.select``) on ``val``, test it on ``test``.

    With ``test=None`` the selected checkpoint is left loaded in ``model`` and not tested
    (``result.test`` stays empty): a learning-rate search trains one model per rate this way and
    tests only the one it chose (``score_test``), so the test split never enters the choice.

    ``result.schedule_times`` is each epoch's time inside ``schedule.epoch``/``schedule.update`` (a
    pruner's selection and scoring, e.g. ST-Prune's eq. 3 and eq. 4), part of the epoch time.
    Phases: ``train`` (the training epochs only, so its time and peak memory are those of training),
    ``validate`` (the periodic passes over the full validation split) and ``evaluate`` (the test pass).
    """
    opt = _optimizer(model, cfg)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs, eta_min=cfg.lr_min)
             if cfg.lr_schedule == "cosine" else None)
    wants_errors = getattr(schedule, "wants_error_matrix", False)
    uses_losses = not getattr(schedule, "ignores_losses", False)
    result = TrainResult(best_epoch=-1, val={}, test={})
    with ctx.meter.phase("validate"):
        result.eval_batch = eval_batch(model, val, eval_loc_input, cfg)
        val_mean = target_mean(val.iter_batches(result.eval_batch))
    best = (math.inf, -1, None, None)   # score, epoch, state, val metrics
    model.train()
    for epoch in range(cfg.epochs):
        with ctx.meter.phase("train"):
            start = ctx.meter.clock()
            ids, weights = schedule.epoch(epoch, cfg.epochs)
            in_schedule = ctx.meter.clock() - start
            order = ctx.rng.permutation(len(ids))
            ids = np.asarray(ids)[order]
            weights = None if weights is None else np.asarray(weights)[order]
            for begin in range(0, len(ids), cfg.batch_size):
                batch_ids = ids[begin:begin + cfg.batch_size]
                batch_w = None if weights is None else weights[begin:begin + cfg.batch_size]
                if wants_errors:
                    losses, errors = train_step(model, opt, source, batch_ids, batch_w, cfg, ctx.torch_generator,
                                                errors=True)
                    feedback = {"errors": errors}
                else:
                    losses = train_step(model, opt, source, batch_ids, batch_w, cfg, ctx.torch_generator)
                    feedback = {}
                if uses_losses:   # timed with synchronised clocks; schedules that ignore losses add no syncs
                    tick = ctx.meter.clock()
                    schedule.update(batch_ids, losses, **feedback)
                    in_schedule += ctx.meter.clock() - tick
                result.optimizer_steps += max(1, min(cfg.location_subsets, source.loc_input.shape[0]))
            if sched is not None:
                sched.step()
            result.epoch_times.append(ctx.meter.clock() - start)
            result.schedule_times.append(in_schedule)
            result.visits_per_epoch.append(len(ids))
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            with ctx.meter.phase("validate"):
                scores = evaluate(model, val, eval_loc_input, result.eval_batch, val_mean)
            result.val_history.append((epoch, scores[cfg.select_metric]))
            score = scores[cfg.select_metric] if math.isfinite(scores[cfg.select_metric]) else math.inf
            if cfg.select == "last" or score < best[0] or best[2] is None:   # NaN ranks last, never sticks
                best = (score, epoch, copy.deepcopy(model.state_dict()), scores)
        if progress:
            progress(epoch + 1, cfg.epochs)
    _, result.best_epoch, state, result.val = best
    model.load_state_dict(state)
    if test is not None:
        score_test(model, test, eval_loc_input, cfg, ctx, result)
    return result
