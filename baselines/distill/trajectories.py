"""Expert trajectories and flat-parameter forwards for trajectory matching (MTT, DATM); no registration.

An expert trajectory is the list of a model's flattened trainable parameters at initialisation and after
every training epoch on the real data. Buffers are cached with ``torch.save`` under
``$STBENCH_CACHE`` (default ``~/.cache/stbench/experts``) or a method's ``cache_dir``, keyed by a
hash of the training data and every setting that shapes them, and reused across runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call


def default_cache_dir() -> Path:
    return Path(os.environ.get("STBENCH_CACHE", "~/.cache/stbench/experts")).expanduser()


def data_digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        a = np.ascontiguousarray(t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def cache_path(cache_dir, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir or default_cache_dir()) / f"experts-{digest}.pt"


class FlatModel:
    """Runs a module with its trainable parameters supplied as one flat vector."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
        self.sizes = [s.numel() for s in self.shapes]

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for n, p in self.model.named_parameters() if p.requires_grad])

    def __call__(self, flat: torch.Tensor, *args):
        parts = torch.split(flat, self.sizes)
        params = {n: part.view(s) for n, part, s in zip(self.names, parts, self.shapes)}
        return functional_call(self.model, params, args)


def train_experts(make_model, batches, num_experts: int, epochs: int, lr: float) -> list[list[torch.Tensor]]:
    """``num_experts`` trajectories of ``epochs`` epochs: plain SGD (MTT's teacher optimiser), masked MSE.

    ``make_model()`` returns a fresh model; ``batches(e)`` yields (x, loc_input, y, mask) for an epoch.
    """
    trajectories = []
    for _ in range(num_experts):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        snapshot = FlatModel(model)
        trajectory = [snapshot.flat().cpu()]
        model.train()
        for epoch in range(epochs):
            for x, loc, y, mask in batches(epoch):
                pred = model(x, loc)
                m = mask.to(pred.dtype)
                loss = (((pred - y) ** 2) * m).sum() / m.sum().clamp(min=1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            trajectory.append(snapshot.flat().cpu())
        trajectories.append(trajectory)
    return trajectories


def load_or_build(path: Path, build) -> tuple[list, float, bool]:
    """(buffers, build seconds, reused): the cached buffers at ``path``, or ``build()`` timed and saved there.

    The build time is stored with the buffers, so a run that reuses them can still charge their cost.
    """
    if path.exists():
        cached = torch.load(path)
        return cached["trajectories"], float(cached["build_s"]), True
    start = time.perf_counter()
    buffers = build()
    build_s = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"trajectories": buffers, "build_s": build_s}, tmp)
    os.replace(tmp, path)
    return buffers, build_s, False
