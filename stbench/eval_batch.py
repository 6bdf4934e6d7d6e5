"""Validation and test batches sized to a memory budget (issue 34).

A full-location pass over the validation or test split is the largest forward a run makes: the
reference STemDist code's peak memory is its evaluation passes at a fixed batch of 256. Here the batch
is either fixed (``TrainConfig.eval_batch_size``) or, with ``eval_memory_mb > 0``, the largest number of
windows whose forward fits that budget of activation memory. The forward's memory is measured, not
guessed: two probe forwards (``PROBE_BATCHES`` windows, inference mode, evaluation mode so no random
draw is consumed) count the bytes of the tensors alive at once (``LiveBytes``). Peak bytes are taken
as affine in the batch: a fixed part (the learned graph, per-location embeddings) plus a part per
window. The batch only changes how the same windows are grouped; metrics stream over all of them
(float rounding aside).
"""
from __future__ import annotations

import weakref

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

PROBE_BATCHES = (1, 4)


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage that the ops run inside it allocate while it is alive, and
    the peak of that count. Views and in-place results share a storage already counted; a storage is
    uncounted when it is freed. Works alike on every device (the caching allocator's statistics exist
    for CUDA only, and resetting them would disturb the runner's per-phase CUDA peaks)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._counted = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._count(t.untyped_storage())
        return out

    def _count(self, storage) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._counted:
            return
        self._counted.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key, size) -> None:
        self._counted.discard(key)
        self.live -= size


def forward_peak_bytes(model, x: torch.Tensor, loc_input: torch.Tensor) -> int:
    """Peak bytes of the tensors alive at once during ``model(x, loc_input)`` (inference and
    evaluation mode, so no random number is drawn), the model's own parameters not counted."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), LiveBytes() as counter:
            model(x, loc_input)
    finally:
        model.train(was_training)
    return counter.peak


def budget_batch(model, windows, loc_input: torch.Tensor, memory_mb: float) -> int:
    """The most windows of ``windows`` whose forward's peak activation memory fits ``memory_mb`` MiB
    (at least 1, at most the whole split)."""
    n = len(windows)
    sizes = sorted({min(b, n) for b in PROBE_BATCHES})
    if len(sizes) < 2:
        return n
    peaks = [forward_peak_bytes(model, windows.batch(np.arange(b)).x, loc_input) for b in sizes]
    per_window = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    if per_window <= 0:
        return n
    fixed = peaks[0] - sizes[0] * per_window
    return int(min(n, max(1, (memory_mb * 2**20 - fixed) // per_window)))


def eval_batch(model, windows, loc_input: torch.Tensor, cfg) -> int:
    """Windows per validation/test batch: ``cfg.eval_batch_size``, or the memory-budgeted batch."""
    if cfg.eval_memory_mb > 0:
        return budget_batch(model, windows, loc_input, cfg.eval_memory_mb)
    return cfg.eval_batch_size
