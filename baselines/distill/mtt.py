"""MTT (Cazenavette et al., CVPR 2022): matching training trajectories; and its bi-dimensional variant.

Experts: ``num_experts`` transductive MTGNNs (``mtgnn``) trained on the real training windows for
``expert_train_epochs`` epochs each with plain SGD (MTT's teacher optimiser, ``lr_teacher``, real
batches of the dataset's training batch size, masked MSE in normalised units); their parameters after
every epoch form the buffers. Building them happens inside ``condense`` (so ``ctx.meter`` counts it)
and they are cached on disk (``trajectories.load_or_build``; ``cache_dir`` or ``$STBENCH_CACHE``)
keyed by a digest of the training data and every expert setting, so later runs reuse them.
``info["experts_reused"]`` says which, and ``info["experts_build_s"]`` is the build time, stored with
the buffers; a run that reuses them reports it as ``reused_setup_s``, which the harness adds to its
condensation cost (the experts are part of MTT's cost whether or not this run trained them). Experts
draw their randomness from a generator seeded by ``expert_seed`` with the global torch RNG forked, so a
run's output does not depend on whether the cache was warm. As in MTT, where buffers are trained once
per dataset and shared by every distillation run, the default ``expert_seed`` is 0 for all run seeds
(seeds then vary the distillation only); -1 ties the experts to the run's seed.

Distillation (appendix D): per iteration pick a random expert and a start epoch t uniformly in
[0, max_start_epoch] (4), start the student at theta*_t, take ``syn_steps`` (10) SGD steps on
synthetic mini-batches with a learnable learning rate alpha (raw, initialised to ``syn_lr_init``,
default ``lr_teacher`` as in MTT), and minimise
    ||theta_hat - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2,   M = expert_epochs (2),
w.r.t. x_S, y_S (SGD, momentum 0.5, as MTT) and alpha (SGD, ``lr_lr``). The student runs in eval mode
(dropout off) through ``torch.func.functional_call`` on a flat parameter vector. The learned alpha is
reported in ``info["syn_lr"]``; it is a plain-SGD rate, so it is passed as a training hint only with
``lr_hint=True`` (then with ``optimizer="sgd"``, ``momentum=0``).

The expert cache key holds the device type (``cpu``/``cuda``): CPU and CUDA kernels give different
trajectories, so experts built on one are not reused on the other.

``stemdist-mtt``: the same on STemDist's clustered (or random, ``clustering=False``) locations with
the location-encoder MTGNN (``mtgnn-le``): M_S x N_S synthetic windows, the synthetic location input
the per-location mean of the synthetic inputs (STemDist eq. 3), and the cluster sizes w_i = |C_i| /
N_T as location weights *in every objective*, as STemDist weights its real, synthetic and evaluation
losses: the experts' masked MSE on the clustered series, the student's MSE inside the trajectory
loss, and the evaluation model's training loss (``location_weight`` of the set) all count location
i's squared errors w_i / mean(w) times. Only ``stemdist-mtt`` has the ``clustering`` and
``kmeans_iterations`` parameters; ``mtt`` and ``datm`` refuse them.

Parameter ranges are checked on construction (counts >= 0 where 0 means the preset's,
``expert_epochs`` and ``syn_steps`` >= 1, ``expert_seed`` >= -1, ``lr_teacher`` and ``lr_data`` > 0,
``lr_lr`` >= 0 (0 keeps the student learning rate fixed), ``syn_lr_init`` >= 0 (0: ``lr_teacher``));
an explicitly set ``expert_batch`` larger than the training windows is refused by ``check``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks, trajectories
from baselines.distill.synthetic import real_batch
from methods.location_clustering import cluster_locations, random_locations
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS

# (iterations, experts, epochs per expert) per preset; the appendix's paper setting: 20 x 15.
PRESET_SIZES = {"smoke": (2, 1, 3), "quick": (200, 5, 8), "paper": (5000, 20, 15)}


class RealView:
    """All real training windows and locations (temporal-only MTT)."""
    name = "temporal"

    def __init__(self, train):
        self.train, self.n, self.num_windows = train, train.series.num_locations, len(train)
        self.loc_input, self.location_weight = None, None

    def gather(self, ids):
        x, y, mask = real_batch(self.train, np.asarray(ids))
        return x, y, mask

    def digest(self) -> str:
        series = self.train.series
        end = int(self.train.starts[-1]) + series.spec.length
        return trajectories.data_digest(series.values[:end], self.train.starts, series.mean, series.std)

    @staticmethod
    def syn_loc(x_s):
        return None


class ClusteredView:
    """STemDist's clustered training series (or random locations), for the bi-dimensional variant."""
    name = "clustered"

    def __init__(self, clustered):
        self.c, self.n, self.num_windows = clustered, clustered.x.shape[1], clustered.num_windows
        self.loc_input, self.location_weight = clustered.location_input(), clustered.weights

    def gather(self, ids):
        return self.c.gather(torch.as_tensor(np.asarray(ids), device=self.c.x.device))

    def digest(self) -> str:
        return trajectories.data_digest(self.c.x, self.c.y, self.c.y_mask, self.c.starts, self.c.assignment)

    @staticmethod
    def syn_loc(x_s):
        return x_s.mean(dim=0).permute(1, 0, 2)


@dataclass
class ClusteringParams:
    """The parameters STemDist's variants add to their base method (``stemdist-mtt``, ``-dc``,
    ``-condtsf``): the location-encoder surrogate and STemDist's clustering (False: random locations,
    unit weights). Listed first among a variant's bases: ``class Params(ClusteringParams, Base.Params)``."""
    model: str = "mtgnn-le"
    clustering: bool = True
    kmeans_iterations: int = 300

    def __post_init__(self):
        super().__post_init__()
        checks.at_least(self, 1, "kmeans_iterations")


def clustered_view(train, budget, params, ctx) -> tuple[ClusteredView, int]:
    """(view, M_S) for a bi-dimensional budget: STemDist's N_S clustered locations (Algorithm 3, its
    ``kmeans_iterations``), or N_S random real locations with ``clustering=False``."""
    m_s, n_s = budget.sizes(len(train), train.series.num_locations, bidimensional=True)
    clustered = (cluster_locations(train, n_s, params.kmeans_iterations, ctx.torch_generator) if params.clustering
                 else random_locations(train, n_s, ctx.rng))
    return ClusteredView(clustered), m_s


def random_windows(view, m: int, ctx):
    """``m`` random windows of ``view`` (sorted ids from ``ctx.rng``) as an initial synthetic set: copies
    of x and y with unobserved targets at 0 (the training mean); returns (x, y, ids)."""
    ids = np.sort(ctx.rng.choice(view.num_windows, size=m, replace=False))
    x, y, mask = view.gather(ids)
    return x.clone(), y.masked_fill(~mask, 0.0).clone(), ids


@METHODS.register("mtt", family="distill", description="MTT trajectory matching against cached MTGNN experts")
class MTT(Condenser):
    labels = "learned"   # synthetic x and y are both optimised

    @dataclass
    class Params:
        iterations: int = 0            # 0: the preset's
        num_experts: int = 0           # 0: the preset's (paper 20)
        expert_train_epochs: int = 0   # 0: the preset's (paper 15)
        lr_teacher: float = 1e-2       # experts' SGD
        expert_batch: int = 0          # 0: the dataset's training batch size
        expert_seed: int = 0           # shared buffers across run seeds, as MTT; -1: the run's seed
        max_start_epoch: int = 4
        expert_epochs: int = 2
        syn_steps: int = 10
        syn_batch: int = 0             # synthetic mini-batch per student step; 0: the whole set
        syn_lr_init: float = 0.0       # 0: lr_teacher
        lr_data: float = 1e-2          # SGD (momentum 0.5) on x and y
        lr_lr: float = 1e-5            # SGD (momentum 0.5) on alpha
        lr_hint: bool = False
        cache_dir: str = ""            # "": $STBENCH_CACHE or ~/.cache/stbench/experts
        model: str = "mtgnn"

        def __post_init__(self):
            checks.at_least(self, 0, "iterations", "num_experts", "expert_train_epochs", "expert_batch",
                            "max_start_epoch", "syn_batch", "syn_lr_init", "lr_lr")
            checks.at_least(self, 1, "expert_epochs", "syn_steps")
            checks.at_least(self, -1, "expert_seed")
            checks.positive(self, "lr_teacher", "lr_data")
            if self.expert_train_epochs:
                checks.require(self.expert_epochs <= self.expert_train_epochs, "expert_epochs",
                               f"<= expert_train_epochs ({self.expert_train_epochs})", self.expert_epochs)

    def check(self, num_windows: int, num_locations: int) -> None:
        checks.batch_fits("expert_batch", self.params.expert_batch, num_windows)

    # -- data ----------------------------------------------------------------------------------
    def view(self, train, budget, ctx):
        m_s, _ = budget.sizes(len(train), train.series.num_locations, bidimensional=False)
        return RealView(train), m_s

    def sizes(self, ctx):
        it, experts, epochs = PRESET_SIZES.get(ctx.preset, PRESET_SIZES["quick"])
        p = self.params
        return p.iterations or it, p.num_experts or experts, p.expert_train_epochs or epochs

    # -- experts -------------------------------------------------------------------------------
    def expert_key(self, view, ctx) -> dict:
        p = self.params
        _, experts, epochs = self.sizes(ctx)
        return {"data": view.digest(), "view": view.name, "n": view.n, "model": p.model,
                "in_channels": ctx.series.num_channels if view.name == "temporal" else None,
                "experts": experts, "epochs": epochs, "lr": p.lr_teacher, "batch": self._expert_batch(ctx, view),
                "seed": self._expert_seed(ctx), "torch": torch.__version__.split("+")[0],
                "device": torch.device(ctx.device).type,     # CPU and CUDA kernels give different experts
                "loss": "mse" if view.location_weight is None else "location-weighted mse",
                "format": 3}   # 3: experts trained after the MTGNN input-skip gradient fix (TimeCollapse)

    def _expert_batch(self, ctx, view) -> int:
        return min(self.params.expert_batch or ctx.dataset_defaults.get("batch_size", 64), view.num_windows)

    def _expert_seed(self, ctx) -> int:
        return ctx.seed if self.params.expert_seed < 0 else self.params.expert_seed

    def build_experts(self, view, in_channels, ctx):
        p = self.params
        _, experts, epochs = self.sizes(ctx)
        rng = np.random.default_rng(self._expert_seed(ctx))
        size = self._expert_batch(ctx, view)

        def make_model():
            return ctx.model_factory(view.n, p.model, in_channels=in_channels).to(ctx.device)

        def batches(_epoch):
            order = rng.permutation(view.num_windows)
            for begin in range(0, len(order), size):
                x, y, mask = view.gather(order[begin:begin + size])
                yield x, view.loc_input, y, mask

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._expert_seed(ctx))
            return trajectories.train_experts(make_model, batches, experts, epochs, p.lr_teacher,
                                              location_weight=view.location_weight)

    def experts(self, view, in_channels, ctx, info, num_params: int | None = None):
        """The expert buffers: from the cache if it holds exactly the expected experts (their number,
        trajectory length and, when given, ``num_params`` per snapshot), else built and cached."""
        path = trajectories.cache_path(self.params.cache_dir or None, self.expert_key(view, ctx))
        _, experts, epochs = self.sizes(ctx)
        buffers, build_s, reused = trajectories.load_or_build(
            path, lambda: self.build_experts(view, in_channels, ctx), num_experts=experts, length=epochs + 1,
            num_params=num_params)
        info.update(experts_reused=reused, experts_build_s=build_s, experts_path=str(path))
        if reused:
            info["reused_setup_s"] = build_s
        return [[t.to(ctx.device) for t in traj] for traj in buffers]

    # -- hooks DATM overrides --------------------------------------------------------------------
    def start_range(self, budget, it: int, iterations: int, trajectory_len: int) -> tuple[int, int]:
        hi = min(self.params.max_start_epoch, trajectory_len - 1 - self.params.expert_epochs)
        return 0, max(0, hi)

    def initial_set(self, view, m_s, buffers, student, ctx, info):
        x, y, ids = random_windows(view, m_s, ctx)
        info["init_ids"] = ids.tolist()
        return x, y

    def before_iteration(self, it: int, x_s, y_s, ctx) -> bool:
        """Plugin hook (CondTSF) at the start of iteration ``it``, given the synthetic leaves; returns
        whether the iteration's own update runs. MTT itself: nothing, True."""
        return True

    # -- distillation ----------------------------------------------------------------------------
    def condense(self, train, budget, ctx) -> CondensedSet:
        p = self.params
        view, m_s = self.view(train, budget, ctx)
        in_channels = train.series.num_channels
        info = {"trajectory_loss": [], "iteration_s": []}
        # the student first, so the cache check knows its parameter count (the experts fork the torch RNG,
        # so the student's initialisation is the same in either order)
        student = trajectories.FlatModel(
            ctx.model_factory(view.n, p.model, in_channels=in_channels).to(ctx.device).twice_differentiable())
        student.model.eval()
        buffers = self.experts(view, in_channels, ctx, info, num_params=sum(student.sizes))
        x0, y0 = self.initial_set(view, m_s, buffers, student, ctx, info)
        x_s, y_s, syn_lr, opt_data, opt_lr = self.learnables(x0, y0, ctx)
        iterations = self.sizes(ctx)[0]
        for it in range(iterations):
            tick = ctx.meter.clock()
            if not self.before_iteration(it, x_s, y_s, ctx):   # a plugin replaced this step (CondTSF)
                info["iteration_s"].append(ctx.meter.clock() - tick)
                continue
            traj = buffers[int(ctx.rng.integers(len(buffers)))]
            lo, hi = self.start_range(budget, it, iterations, len(traj))
            t = int(ctx.rng.integers(lo, hi + 1))
            target = traj[min(t + p.expert_epochs, len(traj) - 1)]
            loss = self.trajectory_loss(student, traj[t], target, x_s, y_s, syn_lr, view, ctx)
            opt_data.zero_grad(set_to_none=True)
            opt_lr.zero_grad(set_to_none=True)
            loss.backward(inputs=[x_s, y_s, syn_lr])
            opt_data.step()
            opt_lr.step()
            info["trajectory_loss"].append(loss.item())
            info["iteration_s"].append(ctx.meter.clock() - tick)
        info["syn_lr"] = syn_lr.item()
        hints = {"batch_size": m_s}
        if p.lr_hint:
            hints.update(lr=syn_lr.item(), optimizer="sgd", momentum=0.0)
        return CondensedSet(x=x_s.detach(), y=y_s.detach(), location_weight=view.location_weight, hints=hints,
                            info=info)

    def learnables(self, x0, y0, ctx):
        """The synthetic leaves x_S, y_S with their SGD (momentum 0.5, as MTT) and the learnable student
        learning rate alpha with its own: (x_s, y_s, syn_lr, opt_data, opt_lr)."""
        p = self.params
        x_s, y_s = x0.requires_grad_(True), y0.requires_grad_(True)
        syn_lr = torch.tensor(p.syn_lr_init or p.lr_teacher, device=ctx.device, requires_grad=True)
        opt_data = torch.optim.SGD([x_s, y_s], lr=p.lr_data, momentum=0.5)
        opt_lr = torch.optim.SGD([syn_lr], lr=p.lr_lr, momentum=0.5)
        return x_s, y_s, syn_lr, opt_data, opt_lr

    def trajectory_loss(self, student, start, target, x_s, y_s, syn_lr, view, ctx) -> torch.Tensor:
        """Normalised parameter distance after ``syn_steps`` student steps on the synthetic set."""
        theta = self.unroll(student, start, x_s, y_s, syn_lr, view, ctx)
        return ((theta - target) ** 2).sum() / ((start - target) ** 2).sum().clamp(min=1e-12)

    def unroll(self, student, start, x_s, y_s, syn_lr, view, ctx, steps: int | None = None) -> torch.Tensor:
        """The student's parameters after ``steps`` (default ``syn_steps``) differentiable SGD steps from
        ``start`` on synthetic mini-batches (TimeDC reuses it for its task loss and curriculum)."""
        p = self.params
        theta = start.clone().requires_grad_(True)
        m = x_s.shape[0]
        size = p.syn_batch or m
        for _ in range(p.syn_steps if steps is None else steps):
            ids = torch.as_tensor(ctx.rng.choice(m, size=min(size, m), replace=False), device=x_s.device) \
                if size < m else slice(None)
            xb, yb = x_s[ids], y_s[ids]
            loss = self.student_loss(student(theta, xb, view.syn_loc(x_s)), yb, view.location_weight)
            grad = torch.autograd.grad(loss, theta, create_graph=True)[0]
            theta = theta - syn_lr * grad
        return theta

    @staticmethod
    def student_loss(pred, y, location_weight=None) -> torch.Tensor:
        """MSE of the student on synthetic windows (every entry observed); with ``location_weight`` each
        location counts w_i / mean(w) times, as in the experts' and the evaluation model's losses."""
        if location_weight is None:
            return ((pred - y) ** 2).mean()
        w = (location_weight / location_weight.mean()).to(pred.dtype).view(1, 1, -1, 1)
        return (((pred - y) ** 2) * w).mean()


@METHODS.register("stemdist-mtt", family="stemdist-variant",
                  description="bi-dimensional MTT on STemDist's clustered locations with mtgnn-le")
class STemDistMTT(MTT):
    bidimensional = True

    @dataclass
    class Params(ClusteringParams, MTT.Params):
        pass

    def view(self, train, budget, ctx):
        return clustered_view(train, budget, self.params, ctx)
