"""Protocol presets: how long evaluation training runs and how often it validates.

* ``smoke``: seconds per method (CI, first look).
* ``quick``: minutes per method on a laptop CPU.
* ``paper``: the papers' protocol: evaluation epochs and batch size per dataset (STemDist appendix C:
  400 epochs for GBA/GLA, 100 otherwise), validation every 5 epochs.
* ``stprune``: the ST-Prune paper's training setup (Sec. 5.1, Table A.2): SGD (momentum 0.9, weight
  decay 1e-4), lr 1e-3 annealed by a cosine schedule to 1e-4, batch 256, MAE loss, 100 epochs, no early
  stopping (``select="last"``: the final model is tested). The cosine schedule steps
  once per epoch, so pruned epochs of any length follow the same learning-rate curve.

Methods read ``ctx.preset`` to size their own loops (e.g. STemDist's T_outer).
"""
from __future__ import annotations

from dataclasses import replace

from stbench import UserError
from stbench.train import TrainConfig

PRESETS = {
    "smoke": dict(epochs=3, eval_every=1, batch_size=32, eval_batch_size=64),
    "quick": dict(epochs=30, eval_every=5, batch_size=64, eval_batch_size=64),
    "paper": dict(eval_every=5, eval_batch_size=64),
    "stprune": dict(epochs=100, batch_size=256, optimizer="sgd", momentum=0.9, weight_decay=1e-4, lr=1e-3,
                    lr_schedule="cosine", lr_min=1e-4, loss="mae", eval_every=100, select="last",
                    eval_batch_size=64),
}


def train_config(preset: str, dataset_defaults: dict, overrides: dict | None = None) -> TrainConfig:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset])
    if preset == "paper":
        settings.setdefault("epochs", dataset_defaults.get("paper_epochs", 100))
        settings.setdefault("batch_size", dataset_defaults.get("batch_size", 64))
    cfg = replace(TrainConfig(), **settings)
    return replace(cfg, **(overrides or {}))
