"""TimeDC (Miao, Liu, Zhao, Guo, Yang, Zheng, Jensen, "Less is More: Efficient Time Series Dataset
Condensation via Two-fold Modal Matching", PVLDB 18(2):226-238, VLDB 2025; arXiv 2410.20905),
temporal only: M_S = budget.sizes(...) synthetic windows over all N locations, inputs and targets
both learned (``labels = "learned"``).

Built on ``mtt`` (``baselines/distill/mtt.py``): the same cached SGD expert buffers (so their build
time is charged to the run, ``reused_setup_s`` when the cache is warm), start epochs, learnable
student learning rate alpha and differentiable student unroll (``MTT.unroll``), with the experts and
the student being TSFE (``stbench/models/tsfe.py``, channel independent, so every location is a
channel). Each data update minimises (slides' Eq. 16, L_all = L + L_Fre + L_tmm)

    L = L_tmm + task_weight * L_task + fre_weight * L_Fre

* **L_tmm** (Eq. 11, MTT's): ||theta_T - theta*_{e0+M}||^2 / ||theta*_{e0} - theta*_{e0+M}||^2, theta_T
  after ``syn_steps`` SGD steps (Eq. 13, theta <- theta - alpha grad MSE(f_theta(X_S), Y_S)) from
  expert snapshot theta*_{e0}, M = ``expert_epochs``.
* **L_Fre**, decomposition-driven frequency matching (DDFM, Eq. 6-8). With the expert's target
  snapshot theta*_{e0+M} (a TSFE trained on the real data, no gradient to its weights), every
  TSOperator output h^j of both TSFE branches (``TSFE.features``, (B, N, P, d)) is split along the
  patch axis into trend h_TRE = AvgPool(Padding(h)) (kernel ``fre_kernel``, edge values repeated) and
  seasonal part h_SEA = h - h_TRE (Eq. 6); each part goes through a Fourier transform along the patches
  (``fre_spectrum``), is averaged over the windows of the batch (real and synthetic batches differ in
  size; the locations stay aligned), flattened, and compared by cosine (Eq. 8):
  L_Fre = sum_{branch, j} [1 - cos(TRE_T, TRE_S)] + [1 - cos(SEA_T, SEA_S)], real batch T of
  ``real_batch`` windows against the synthetic set S.
* **L_task** ("L" in Eq. 16, not defined further in the sources): read here as the forecasting loss
  of the student trained on the synthetic data, the masked MSE of theta_T on the same real batch.
* **CT2M curriculum** (Alg. 2, Eq. 15). Each round draws e0; for every expert k of the pool (all
  experts, or ``curriculum_experts`` drawn at random) the student is pre-updated ``curriculum_steps``
  steps (0: ``syn_steps``) on the synthetic data from theta*_k[e0] (no graph), and expert k scores
  s_k = cos(theta~_k - theta*_k[e0], theta*_k[e0+M] - theta*_k[e0]), i.e. dis_k = -D with D the cosine
  distance of the two movements. Experts are sorted by s_k descending (most similar = easy first, ties
  by index) and matched in that order, one data update each, until ``iterations`` updates are spent.
  ``curriculum=False`` gives MTT's random expert per update (the paper's w/o CT2M ablation, with DDFM
  kept). The pre-update starts from each expert's own snapshot because experts start from different
  random initialisations, whose parameter movements are not comparable across experts.

Choices where the paper is ambiguous (all parameters): where the FFT enters (``fre_spectrum``:
"amplitude", |rfft| of each component along the patches, the default; "complex", real and imaginary
parts, phase-sensitive; "none", Eq. 8 on the time-domain components as printed); which network
extracts the features (the expert's target snapshot); the loss weights (``fre_weight`` =
``task_weight`` = 1, Eq. 16's unit weights; 0 switches a term off); L_task (above); the feature pooling
kernel (``fre_kernel`` 3, for the 6 patches of a 12-step TSFE input).

Hyperparameters. Code/scripts: experts 20, 100 epochs (script; STemDist's appendix D: 20 x 40, the
``paper`` preset), 1000 outer iterations, max start epoch 20, data SGD momentum 0.5, syn-lr init 1e-3,
condensed size 500 windows (here: the budget). Kept from ``mtt`` for comparability with the other
trajectory-matching baselines: SGD experts with ``lr_teacher`` 1e-2 (the code trains its buffers with
Adam lr 1e-4; the student unroll is SGD, so SGD experts are the consistent target), ``lr_data`` 1e-2
(the code's 1e-4 belongs to a tensor it never updates; STemDist searched TimeDC's rates over 1e-2 ..
1e-7), ``expert_epochs`` 2 and ``syn_steps`` 10 (accepted but unused in the code), the whole
synthetic set per student step (``syn_batch`` 0; the code used batches of 16 of 100 windows).

Public-code bugs not copied (uestc-liuzq/STdistillation ``distill_ts.py``): its synthetic tensors have
no ``requires_grad`` and are re-sampled from the real data every iteration, so only the student
learning rate is ever trained (here X_S, Y_S are leaves updated every iteration and must move); its
inputs and targets are drawn with independent indices (here the initial pairs are real windows); it
has no DDFM and no ranked curriculum (both implemented here); its evaluation starts from the expert
snapshot and early-stops on the test set (stbench's runner evaluates a fresh model, selected on
validation).

Parameter ranges are checked on construction (MTT's, plus ``fre_weight``, ``task_weight``,
``curriculum_steps``, ``curriculum_experts``, ``real_batch`` >= 0, ``fre_kernel`` odd >= 1,
``fre_spectrum`` one of the three); an explicitly set ``real_batch`` larger than the training windows is
refused by ``check``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from baselines.distill import checks, trajectories
from baselines.distill.mtt import MTT
from baselines.distill.synthetic import masked_mse
from stbench.models.tsfe import moving_average
from stbench.protocols import CondensedSet
from stbench.registry import METHODS

# (iterations, experts, epochs per expert) per preset; paper: the code's 1000 iterations, appendix D's 20 x 40.
PRESET_SIZES = {"smoke": (2, 2, 3), "quick": (200, 5, 8), "paper": (1000, 20, 40)}
SPECTRA = ("amplitude", "complex", "none")
EPS = 1e-12


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of two tensors taken as flat vectors (0 when either is zero)."""
    a, b = a.reshape(-1), b.reshape(-1)
    return (a * b).sum() / (a.norm() * b.norm()).clamp(min=EPS)


def normalised_distance(theta, start, target) -> torch.Tensor:
    """MTT's trajectory loss: ||theta - target||^2 / ||start - target||^2 (1 when theta = start)."""
    return ((theta - target) ** 2).sum() / ((start - target) ** 2).sum().clamp(min=1e-12)


def feature_parts(h: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 on features (B, N, P, d): (trend, seasonal), the trend a padded moving average over P."""
    trend = moving_average(h, kernel, dim=-2)
    return trend, h - trend


def spectrum(z: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, N, P, d) -> the batch mean of the component's ``mode`` spectrum along the patches."""
    if mode == "amplitude":
        z = torch.fft.rfft(z, dim=-2).abs()
    elif mode == "complex":
        z = torch.view_as_real(torch.fft.rfft(z, dim=-2))
    elif mode != "none":
        raise ValueError(f"fre_spectrum must be one of {', '.join(SPECTRA)} (got {mode!r})")
    return z.mean(dim=0)


def frequency_loss(real: dict, synthetic: dict, kernel: int = 3, mode: str = "amplitude") -> torch.Tensor:
    """DDFM: sum over branches and layers of (1 - cos) between the real and synthetic trend spectra plus
    the same for the seasonal spectra. ``real``/``synthetic``: ``TSFE.features`` outputs (any batch
    sizes, the same locations). 0 for identical features; unchanged by positive rescaling of either."""
    total = None
    for name in real:
        for h_real, h_syn in zip(real[name], synthetic[name], strict=True):
            for part_real, part_syn in zip(feature_parts(h_real, kernel), feature_parts(h_syn, kernel)):
                term = 1 - cosine(spectrum(part_real, mode), spectrum(part_syn, mode))
                total = term if total is None else total + term
    return total


def curriculum_order(scores) -> list[int]:
    """Positions of ``scores`` from most to least similar (easy to hard); ties keep index order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()


@METHODS.register("timedc", family="timeseries",
                  description="TimeDC: TSFE trajectory matching with frequency matching and an expert curriculum")
class TimeDC(MTT):
    labels = "learned"   # synthetic x and y are both optimised

    @dataclass
    class Params(MTT.Params):
        model: str = "tsfe"
        max_start_epoch: int = 20      # distill_ts.py's max_start_epoch
        fre_weight: float = 1.0        # lambda_f on L_Fre (0: no DDFM)
        task_weight: float = 1.0       # on L_task, the unrolled student's real-batch MSE (0: off)
        fre_kernel: int = 3            # Eq. 6 pooling kernel over the feature patches (odd)
        fre_spectrum: str = "amplitude"   # where the FFT enters: amplitude | complex | none
        real_batch: int = 0            # real windows per L_Fre / L_task; 0: the dataset's batch size
        curriculum: bool = True        # CT2M ranking (False: a random expert per update, as MTT)
        curriculum_steps: int = 0      # pre-update steps a; 0: syn_steps
        curriculum_experts: int = 0    # experts ranked per round; 0: all

        def __post_init__(self):
            super().__post_init__()
            checks.at_least(self, 0, "fre_weight", "task_weight", "real_batch", "curriculum_steps",
                            "curriculum_experts")
            checks.at_least(self, 1, "fre_kernel")
            checks.require(self.fre_kernel % 2 == 1, "fre_kernel", "odd", self.fre_kernel)
            checks.one_of(self, "fre_spectrum", SPECTRA)

    def check(self, num_windows: int, num_locations: int) -> None:
        super().check(num_windows, num_locations)
        checks.batch_fits("real_batch", self.params.real_batch, num_windows)

    def sizes(self, ctx):
        it, experts, epochs = PRESET_SIZES.get(ctx.preset, PRESET_SIZES["quick"])
        p = self.params
        return p.iterations or it, p.num_experts or experts, p.expert_train_epochs or epochs

    # -- the pieces ------------------------------------------------------------------------------
    def expert_similarities(self, student, buffers, pool, e0, x_s, y_s, syn_lr, view, ctx) -> torch.Tensor:
        """s_k for each expert k in ``pool``: the cosine between the student's movement after the
        pre-update from theta*_k[e0] and expert k's movement from e0 to e0 + expert_epochs."""
        p = self.params
        steps = p.curriculum_steps or p.syn_steps
        xs, ys, lr = x_s.detach(), y_s.detach(), syn_lr.detach()
        scores = []
        for k in pool:
            traj = buffers[k]
            start, target = traj[e0], traj[min(e0 + p.expert_epochs, len(traj) - 1)]
            theta = self.unroll(student, start, xs, ys, lr, view, ctx, steps=steps).detach()
            scores.append(cosine(theta - start, target - start))
        return torch.stack(scores)

    def rank_experts(self, student, buffers, e0, x_s, y_s, syn_lr, view, ctx) -> tuple[list[int], list[float]]:
        """(experts in matching order, their similarity scores in that order) for one curriculum round."""
        p = self.params
        k = len(buffers)
        if not p.curriculum:
            return [int(ctx.rng.integers(k))], []
        pool = np.arange(k) if not p.curriculum_experts or p.curriculum_experts >= k \
            else np.sort(ctx.rng.choice(k, size=p.curriculum_experts, replace=False))
        scores = self.expert_similarities(student, buffers, pool, e0, x_s, y_s, syn_lr, view, ctx).tolist()
        order = curriculum_order(scores)
        return [int(pool[i]) for i in order], [scores[i] for i in order]

    def objective(self, student, feature_net, traj, e0, x_s, y_s, syn_lr, real, view, ctx) -> dict:
        """The loss terms of one data update against trajectory ``traj`` from epoch ``e0``; ``real`` is
        the real batch (x, y, mask); ``feature_net`` a TSFE whose weights are overwritten."""
        p = self.params
        start, target = traj[e0], traj[min(e0 + p.expert_epochs, len(traj) - 1)]
        theta = self.unroll(student, start, x_s, y_s, syn_lr, view, ctx)
        terms = {"trajectory": normalised_distance(theta, start, target)}
        x_r, y_r, mask_r = real
        zero = x_s.new_zeros(())
        terms["task"] = masked_mse(student(theta, x_r, None), y_r, mask_r) if p.task_weight else zero
        if p.fre_weight:
            load_flat(feature_net, student, target)
            with torch.no_grad():
                real_features = feature_net.features(x_r)
            terms["frequency"] = frequency_loss(real_features, feature_net.features(x_s), p.fre_kernel,
                                                p.fre_spectrum)
        else:
            terms["frequency"] = zero
        terms["total"] = terms["trajectory"] + p.task_weight * terms["task"] + p.fre_weight * terms["frequency"]
        return terms

    # -- distillation ----------------------------------------------------------------------------
    def condense(self, train, budget, ctx) -> CondensedSet:
        p = self.params
        view, m_s = self.view(train, budget, ctx)
        in_channels = train.series.num_channels
        info = {"loss": [], "trajectory_loss": [], "frequency_loss": [], "task_loss": [], "iteration_s": [],
                "curriculum": []}
        model = ctx.model_factory(view.n, p.model, in_channels=in_channels).to(ctx.device).twice_differentiable()
        if not callable(getattr(model, "features", None)):
            raise ValueError(f"timedc needs a model with intermediate features (tsfe), got {p.model!r}")
        student = trajectories.FlatModel(model)
        student.model.eval()
        feature_net = copy.deepcopy(model).eval().requires_grad_(False)
        buffers = self.experts(view, in_channels, ctx, info, num_params=sum(student.sizes))
        x0, y0 = self.initial_set(view, m_s, buffers, student, ctx, info)
        x_s, y_s, syn_lr, opt_data, opt_lr = self.learnables(x0, y0, ctx)
        iterations = self.sizes(ctx)[0]
        real_size = min(p.real_batch or ctx.dataset_defaults.get("batch_size", 64), view.num_windows)
        it = 0
        while it < iterations:
            tick = ctx.meter.clock()
            lo, hi = self.start_range(budget, it, iterations, len(buffers[0]))
            e0 = int(ctx.rng.integers(lo, hi + 1))
            order, scores = self.rank_experts(student, buffers, e0, x_s, y_s, syn_lr, view, ctx)
            if p.curriculum:
                info["curriculum"].append({"start_epoch": e0, "order": order, "scores": scores})
            for k in order[:iterations - it]:
                real = view.gather(np.sort(ctx.rng.choice(view.num_windows, size=real_size, replace=False)))
                terms = self.objective(student, feature_net, buffers[k], e0, x_s, y_s, syn_lr, real, view, ctx)
                opt_data.zero_grad(set_to_none=True)
                opt_lr.zero_grad(set_to_none=True)
                terms["total"].backward(inputs=[x_s, y_s, syn_lr])
                opt_data.step()
                opt_lr.step()
                for key, name in (("total", "loss"), ("trajectory", "trajectory_loss"),
                                  ("frequency", "frequency_loss"), ("task", "task_loss")):
                    info[name].append(terms[key].item())
                info["iteration_s"].append(ctx.meter.clock() - tick)
                tick = ctx.meter.clock()
                it += 1
        info["syn_lr"] = syn_lr.item()
        hints = {"batch_size": m_s}
        if p.lr_hint:
            hints.update(lr=syn_lr.item(), optimizer="sgd", momentum=0.0)
        return CondensedSet(x=x_s.detach(), y=y_s.detach(), hints=hints, info=info)


def load_flat(model: torch.nn.Module, flat_model: trajectories.FlatModel, flat: torch.Tensor) -> None:
    """Copy a flat parameter vector (``flat_model``'s layout) into ``model``'s parameters."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, part, shape in zip(flat_model.names, torch.split(flat, flat_model.sizes), flat_model.shapes):
            params[name].copy_(part.view(shape))
