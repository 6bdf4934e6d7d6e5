"""CD, contextual diversity (Agarwal et al. 2020; ST-Prune Appendix A.2): k-center on predictive distributions.

Contextual diversity measures how differently the model "sees" two samples by the symmetric KL
divergence between their predicted distributions over the output map (for segmentation, the class
probabilities of the regions predicted as each class, weighted by entropy), and selects with
k-center-greedy on that distance (DeepCore's ``contextualdiversity.py``: k-center over softmax outputs
with 0.5 KL(a||b) + 0.5 KL(b||a)). Regression form:

* each window's context is the proxy's whole forecast map (horizon x location x channel), every output
  a Gaussian N(forecast, sigma_o^2) with sigma_o^2 the proxy's mean squared training residual at that
  output (the maximum-likelihood variance of a homoscedastic Gaussian model, which MSE training is);
* the distance between two windows is the mean over outputs of the symmetric KL divergence of their
  Gaussians, sum_o (mu_io - mu_jo)^2 / (2 sigma_o^2) / D: the squared Euclidean distance between the
  whitened forecasts (``prediction`` features, ``proxy.py``);
* k-center-greedy (Sener & Savarese 2018; ``baselines/coreset/kcenter.py``), the first centre drawn
  uniformly with ``ctx.rng`` (DeepCore draws it at random): each next window is the one farthest from
  its nearest kept window, until round(r n) are kept.

There are no classes to aggregate regions by, so the per-class entropy weighting of CDAL has no
counterpart; the forecast map keeps the spatial and temporal layout instead. Cost: one proxy, one
prediction pass, O(n k D) time and O(n D) memory (D = L_out x N x C_t, capped by ``feature_gib``).
"""
from __future__ import annotations

from baselines.coreset.kcenter import kcenter_greedy
from baselines.selection.proxy import StaticSelector
from stbench.registry import METHODS


@METHODS.register("cd", family="selection",
                  description="static: k-center on the symmetric KL between proxy predictive distributions")
class ContextualDiversity(StaticSelector):
    def select(self, train, keep):
        feats = self.features("prediction", train)
        with self.phase("select"):
            first = int(self.ctx.rng.integers(len(train)))
            return kcenter_greedy(feats, keep, first).cpu().numpy()
