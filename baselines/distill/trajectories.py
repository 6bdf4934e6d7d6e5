"""Expert trajectories and flat-parameter forwards for trajectory matching (MTT, DATM); no registration.

An expert trajectory is the list of a model's flattened trainable parameters at initialisation and after
every training epoch on the real data. Buffers are cached under ``$STBENCH_CACHE`` (default
``~/.cache/stbench/experts``) or a method's ``cache_dir``, keyed by a hash of the training data and
every setting that shapes them (the method's key includes the device type), and reused across runs.

Cache files are plain data (``stbench.safe_io.save_plain``: a dict of lists of tensors and a float)
read back weights-only (``load_plain``), so a crafted file in the cache folder cannot run code when
it is loaded. A file that cannot be read, or whose content is not the buffers this run expects
(``valid_buffers``: the number of experts, the trajectory length, one finite 1-D float tensor of the
model's parameter count per epoch, a finite build time), is ignored with a one-line warning and
rebuilt in place.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call

from stbench import warn
from stbench.safe_io import load_plain, save_plain


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


def weighted_masked_mse(pred, y, mask, location_weight=None) -> torch.Tensor:
    """Masked MSE over all entries; with ``location_weight`` (N,) each location's squared errors count
    w_l / mean(w) times (the trainer's and STemDist's convention: cluster-size weights averaging 1)."""
    m = mask.to(pred.dtype)
    count = m.sum().clamp(min=1)
    if location_weight is not None:
        m = m * (location_weight / location_weight.mean()).to(pred.dtype).view(1, 1, -1, 1)
    return (((pred - y) ** 2) * m).sum() / count


def train_experts(make_model, batches, num_experts: int, epochs: int, lr: float,
                  location_weight: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
    """``num_experts`` trajectories of ``epochs`` epochs: plain SGD (MTT's teacher optimiser), masked MSE
    (location-weighted with ``location_weight``, see ``weighted_masked_mse``).

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
                loss = weighted_masked_mse(model(x, loc), y, mask, location_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            trajectory.append(snapshot.flat().cpu())
        trajectories.append(trajectory)
    return trajectories


def valid_buffers(cached, num_experts: int | None = None, length: int | None = None,
                  num_params: int | None = None) -> str:
    """What is wrong with ``cached`` as an expert cache (optionally of this many experts, trajectory
    length and parameter count); the empty string if it is usable."""
    if not isinstance(cached, dict) or not isinstance(cached.get("trajectories"), list):
        return "no list of trajectories"
    build_s = cached.get("build_s")
    if isinstance(build_s, bool) or not isinstance(build_s, (int, float)) or not math.isfinite(build_s) \
            or build_s < 0:
        return "no valid build time"
    buffers = cached["trajectories"]
    if not buffers or (num_experts is not None and len(buffers) != num_experts):
        return f"{len(buffers)} trajectories, expected {num_experts if num_experts is not None else 'some'}"
    sizes = set()
    for traj in buffers:
        if not isinstance(traj, list) or not traj or (length is not None and len(traj) != length):
            return f"a trajectory that is not a list of {length if length is not None else 'some'} snapshots"
        for t in traj:
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or not t.is_floating_point():
                return "a snapshot that is not a 1-D float tensor"
            sizes.add(t.numel())
    if len(sizes) != 1 or (num_params is not None and sizes != {num_params}):
        return f"snapshots of {sorted(sizes)} parameters, expected {num_params if num_params is not None else 'one size'}"
    if not all(bool(torch.isfinite(t).all()) for traj in buffers for t in traj):
        return "non-finite parameters"
    return ""


def load_or_build(path: Path, build, num_experts: int | None = None, length: int | None = None,
                  num_params: int | None = None) -> tuple[list, float, bool]:
    """(buffers, build seconds, reused): the cached buffers at ``path``, or ``build()`` timed and saved there.

    The build time is stored with the buffers, so a run that reuses them can still charge their cost.
    The cache is read as plain data only (``load_plain``) and checked with ``valid_buffers`` against
    the expected shape; an unreadable or invalid file is rebuilt (and overwritten), never trusted.
    """
    path = Path(path)
    if path.exists():
        cached = load_plain(path)              # None, with a warning, if unreadable or not plain data
        if cached is not None:
            problem = valid_buffers(cached, num_experts, length, num_params)
            if not problem:
                return cached["trajectories"], float(cached["build_s"]), True
            warn(f"ignoring invalid expert cache {path} ({problem}); rebuilding it")
    start = time.perf_counter()
    buffers = build()
    build_s = time.perf_counter() - start
    save_plain(path, {"trajectories": buffers, "build_s": build_s})
    return buffers, build_s, False
