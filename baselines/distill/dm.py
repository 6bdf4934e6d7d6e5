"""DM (Zhao & Bilen, WACV 2023): dataset condensation with distribution matching, temporal only.

M_S = round(rho * M_T) synthetic windows over all N locations, initialised from random real windows.
Every iteration draws a freshly initialised transductive MTGNN (``mtgnn``, the reference's surrogate)
and a real mini-batch, embeds both sets and minimises the squared distance between the mean real and
the mean synthetic embedding, ||mean_b e(x_b) - mean_s e(x_s)||^2 (DM eq. 3 with one "class": a
regression task has none), with one optimiser step on the synthetic data.

Choices (parameters):
* Embedding: the penultimate features of MTGNN (input of ``end_conv_2``, i.e. DM's feature extractor
  without the last linear layer), flattened over locations; ``embedding="output"`` uses the forecast
  itself (what the reference code matches).
* The random networks are used in eval mode (dropout off): each iteration's embedding is a fixed
  random feature map, as in DM where the sampled network is not trained.
* Targets (``label_mode``):
  - ``"teacher"`` (default, the reference's design, fixed): an MTGNN trained on the real data for
    ``teacher_epochs`` epochs inside ``condense`` (so its time counts) labels the final synthetic
    inputs in **eval mode** (the reference labels in training mode, i.e. with dropout noise). Only x
    is optimised.
  - ``"learned"``: y starts at the real targets of the initial windows and is learned by matching
    the mean of the concatenation [e(x), y] (real y normalised, unobserved entries 0), so the synthetic
    targets match the real target distribution's mean jointly with the input embedding.
* Real batch: ``batch_size`` (0: the dataset's training batch size, reference -bt/-bd).

Parameter ranges (counts >= 0 where 0 means the preset's, learning rates > 0, ``label_mode`` and
``embedding`` from their lists) are checked on construction; an explicitly set ``batch_size`` larger
than the training windows is refused by ``check``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.distill import checks
from baselines.distill.synthetic import FeatureHook, matching_batch_size, real_batch, sample_ids, temporal_synthetic_set
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS
from stbench.sources import RealSource
from stbench.train import TrainConfig, adam, train_step

PRESET_ITERATIONS = {"smoke": 3, "quick": 200, "paper": 2000}
PRESET_TEACHER_EPOCHS = {"smoke": 1, "quick": 5, "paper": 20}


@METHODS.register("dm", family="distill", description="DM distribution matching under random MTGNNs")
class DM(Condenser):
    @dataclass
    class Params:
        iterations: int = 0            # 0: the preset's
        batch_size: int = 0            # real batch; 0: the dataset's training batch size
        lr_data: float = 1e-2          # Adam on the synthetic data
        label_mode: str = "teacher"    # teacher | learned
        teacher_epochs: int = 0        # 0: the preset's
        teacher_lr: float = 1e-3
        embedding: str = "features"    # features (penultimate) | output
        model: str = "mtgnn"

        def __post_init__(self):
            checks.at_least(self, 0, "iterations", "batch_size", "teacher_epochs")
            checks.positive(self, "lr_data", "teacher_lr")
            checks.one_of(self, "label_mode", ("teacher", "learned"))
            checks.one_of(self, "embedding", ("features", "output"))

    def check(self, num_windows: int, num_locations: int) -> None:
        checks.batch_fits("batch_size", self.params.batch_size, num_windows)

    def _batch(self, train, ctx) -> int:
        return matching_batch_size(train, ctx, self.params.batch_size or ctx.dataset_defaults.get("batch_size", 64))

    def _iterations(self, ctx) -> int:
        return self.params.iterations or PRESET_ITERATIONS.get(ctx.preset, PRESET_ITERATIONS["quick"])

    def condense(self, train, budget, ctx) -> CondensedSet:
        p = self.params
        x_s, y_s, init_ids, n = temporal_synthetic_set(train, budget, ctx, learn_y=p.label_mode == "learned")
        m_s = x_s.shape[0]
        opt = adam([x_s, y_s] if p.label_mode == "learned" else [x_s], p.lr_data)
        batch = self._batch(train, ctx)
        info = {"matching_loss": [], "iteration_s": [], "init_ids": init_ids.tolist(), "batch": batch}
        self.setup(train, n, ctx, info)
        for it in range(self._iterations(ctx)):
            tick = ctx.meter.clock()
            if not self.before_iteration(it, x_s, y_s, ctx):   # a plugin replaced this step (CondTSF)
                info["iteration_s"].append(ctx.meter.clock() - tick)
                continue
            real = real_batch(train, sample_ids(ctx, len(train), batch))
            loss = self.iteration(it, train, real, x_s, y_s, n, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[x_s, y_s] if p.label_mode == "learned" else [x_s])
            opt.step()
            self.after_step(train, ctx)
            info["matching_loss"].append(loss.item())
            info["iteration_s"].append(ctx.meter.clock() - tick)
        y_out = y_s.detach()
        if p.label_mode == "teacher":
            tick = ctx.meter.clock()
            teacher = self.train_teacher(train, n, ctx)
            with torch.no_grad():
                y_out = torch.cat([teacher(xb) for xb in torch.split(x_s.detach(), batch)])
            info["teacher_s"] = ctx.meter.clock() - tick
        return CondensedSet(x=x_s.detach(), y=y_out, hints={"batch_size": m_s}, info=info)

    def before_iteration(self, it: int, x_s, y_s, ctx) -> bool:
        """Plugin hook (CondTSF) at the start of iteration ``it``, given the synthetic leaves; returns
        whether the iteration's own update runs. DM itself: nothing, True."""
        return True

    # -- pieces IDM overrides ------------------------------------------------------------------
    def setup(self, train, n, ctx, info) -> None:
        """Nothing to prepare for DM."""

    def after_step(self, train, ctx) -> None:
        """DM keeps no networks between iterations."""

    def iteration(self, it, train, real, x_s, y_s, n, ctx) -> torch.Tensor:
        model = ctx.model_factory(n, self.params.model, in_channels=x_s.shape[3]).to(ctx.device)
        model.eval()
        return self.embedding_distance(model, real, x_s, y_s)

    def embed(self, model, x, y) -> torch.Tensor:
        hook = FeatureHook(model) if self.params.embedding == "features" else None
        e = hook(x) if hook else model(x).reshape(x.shape[0], -1)
        if hook:
            hook.remove()
        if self.params.label_mode == "learned":
            e = torch.cat([e, y.reshape(y.shape[0], -1)], dim=1)
        return e

    def embedding_distance(self, model, real, x_s, y_s) -> torch.Tensor:
        """||mean embedding of the real batch - mean embedding of the synthetic set||^2."""
        xb, yb, mb = real
        with torch.no_grad():
            e_real = self.embed(model, xb, yb.masked_fill(~mb, 0.0)).mean(dim=0)
        e_syn = self.embed(model, x_s, y_s).mean(dim=0)
        return ((e_real - e_syn) ** 2).sum()

    def label_source(self) -> str:
        return "teacher" if self.params.label_mode == "teacher" else "learned"

    def train_teacher(self, train, n, ctx):
        """An MTGNN trained on the real windows (Adam), returned in eval mode."""
        p = self.params
        teacher = ctx.model_factory(n, p.model, in_channels=train.series.num_channels).to(ctx.device)
        opt = adam(teacher.parameters(), p.teacher_lr)
        source = RealSource(train)
        size = ctx.dataset_defaults.get("batch_size", 64)
        cfg = TrainConfig(loss="mse", batch_size=size)
        epochs = p.teacher_epochs or PRESET_TEACHER_EPOCHS.get(ctx.preset, PRESET_TEACHER_EPOCHS["quick"])
        teacher.train()
        for _ in range(epochs):
            order = ctx.rng.permutation(len(source))
            for begin in range(0, len(order), size):
                train_step(teacher, opt, source, order[begin:begin + size], None, cfg, ctx.torch_generator)
        teacher.eval()
        return teacher
