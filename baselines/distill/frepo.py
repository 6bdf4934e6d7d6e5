"""FRePo (Zhou, Nezhadarya, Ba, NeurIPS 2022): kernel ridge regression on learned features, temporal only.

M_S = round(rho * M_T) synthetic windows over all N locations, initialised from random real windows;
x and y are both learned. A pool of ``pool_size`` transductive MTGNNs supplies feature maps phi: each
step picks a pool model (round robin, as the reference), computes phi on a real batch (no gradient,
FRePo's stop-gradient on the target side) and on the synthetic set, predicts the real targets by
kernel ridge regression on the synthetic set,
    Y_hat = K_ts (K_ss + lambda I)^-1 Y_s,   K_ts = phi(x_b) phi(x_s)^T,  K_ss = phi(x_s) phi(x_s)^T,
and minimises the masked MSE between Y_hat and the real targets. **Everything is in normalised units**
(the reference compares raw real targets with normalised synthetic ones). The chosen pool model then
takes one Adam step on the synthetic set, and is re-initialised after ``max_online_updates`` steps
(reference 10), FRePo's online model pool.

Choices (parameters): phi = MTGNN's penultimate features (input of its last 1x1 convolution, FRePo's
last hidden layer) flattened over locations, computed in eval mode; lambda = ``krr_lambda`` x
mean(diag K_ss) (FRePo scales the ridge by the kernel trace; the reference adds I); pool models start
with staggered ages so they are not all reset together; ``steps`` per preset.

Learning rates: ``lr_data`` is the reference's ``-lrf`` (``lr_feat``, Adam on the synthetic x and y)
and ``lr_model`` its ``-lrs`` (``lr_syn``, the pool models' Adam); both 1e-3 in its commands.
Parameter ranges (counts >= 0 where 0 means the preset's, ``pool_size`` and ``max_online_updates``
>= 1, learning rates and ``krr_lambda`` > 0) are checked on construction; an explicitly set
``batch_size`` larger than the training windows is refused by ``check``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from baselines.distill import checks
from baselines.distill.synthetic import (FeatureHook, masked_mse, matching_batch_size, real_batch,
                                         sample_ids, temporal_synthetic_set)
from stbench.protocols import CondensedSet, Condenser
from stbench.registry import METHODS
from stbench.sources import SyntheticSource
from stbench.train import TrainConfig, adam, train_step

PRESET_STEPS = {"smoke": 3, "quick": 200, "paper": 2000}


def krr_predict(f_target, f_support, y_support, lam: float) -> torch.Tensor:
    """K_ts (K_ss + lam * mean(diag K_ss) I)^-1 Y_s with linear kernels on the features."""
    k_ss = f_support @ f_support.T
    k_ts = f_target @ f_support.T
    ridge = lam * k_ss.diagonal().mean().clamp(min=1e-12)
    eye = torch.eye(k_ss.shape[0], device=k_ss.device, dtype=k_ss.dtype)
    flat = y_support.reshape(y_support.shape[0], -1)
    return (k_ts @ torch.linalg.solve(k_ss + ridge * eye, flat)).reshape(f_target.shape[0], *y_support.shape[1:])


@METHODS.register("frepo", family="distill", description="FRePo: KRR on MTGNN features with an online model pool")
class FRePo(Condenser):
    labels = "learned"   # synthetic x and y are both optimised

    @dataclass
    class Params:
        steps: int = 0                 # 0: the preset's
        batch_size: int = 0            # real batch; 0: the dataset's training batch size
        lr_data: float = 1e-3          # Adam on x and y (reference -lrf, lr_feat, 1e-3)
        lr_model: float = 1e-3         # pool models' Adam (reference -lrs, lr_syn, 1e-3)
        pool_size: int = 3
        max_online_updates: int = 10
        krr_lambda: float = 1e-3
        model: str = "mtgnn"

        def __post_init__(self):
            checks.at_least(self, 0, "steps", "batch_size")
            checks.at_least(self, 1, "pool_size", "max_online_updates")
            checks.positive(self, "lr_data", "lr_model", "krr_lambda")

    def check(self, num_windows: int, num_locations: int) -> None:
        checks.batch_fits("batch_size", self.params.batch_size, num_windows)

    def condense(self, train, budget, ctx) -> CondensedSet:
        p = self.params
        x_s, y_s, init_ids, n = temporal_synthetic_set(train, budget, ctx)
        m_s = x_s.shape[0]
        opt = adam([x_s, y_s], p.lr_data)
        self.n, self.in_channels = n, x_s.shape[3]
        pool = [self._fresh(ctx) for _ in range(p.pool_size)]
        ages = [i * p.max_online_updates // max(1, p.pool_size) for i in range(p.pool_size)]
        batch = matching_batch_size(train, ctx, p.batch_size or ctx.dataset_defaults.get("batch_size", 64))
        steps = p.steps or PRESET_STEPS.get(ctx.preset, PRESET_STEPS["quick"])
        info = {"krr_loss": [], "step_s": [], "init_ids": init_ids.tolist(), "batch": batch, "resets": 0}
        cfg = TrainConfig(loss="mse")
        for step in range(steps):
            tick = ctx.meter.clock()
            k = step % p.pool_size
            model, model_opt = pool[k]
            loss = self.krr_loss(model, real_batch(train, sample_ids(ctx, len(train), batch)), x_s, y_s)
            opt.zero_grad(set_to_none=True)
            loss.backward(inputs=[x_s, y_s])
            opt.step()
            model.train()
            train_step(model, model_opt, SyntheticSource(x_s, y_s, None), torch.arange(m_s).numpy(), None, cfg,
                       ctx.torch_generator)
            ages[k] += 1
            if ages[k] >= p.max_online_updates:
                pool[k], ages[k] = self._fresh(ctx), 0
                info["resets"] += 1
            info["krr_loss"].append(loss.item())
            info["step_s"].append(ctx.meter.clock() - tick)
        return CondensedSet(x=x_s.detach(), y=y_s.detach(), hints={"batch_size": m_s}, info=info)

    def _fresh(self, ctx):
        model = ctx.model_factory(self.n, self.params.model, in_channels=self.in_channels).to(ctx.device)
        return model, adam(model.parameters(), self.params.lr_model)

    def krr_loss(self, model, real, x_s, y_s) -> torch.Tensor:
        """Masked MSE (normalised units) of the KRR prediction of the real batch from the synthetic set."""
        xb, yb, mb = real
        model.eval()
        hook = FeatureHook(model)
        with torch.no_grad():
            f_real = hook(xb)
        f_syn = hook(x_s)
        hook.remove()
        return masked_mse(krr_predict(f_real, f_syn, y_s, self.params.krr_lambda), yb, mb)
