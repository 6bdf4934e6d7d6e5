"""Index-based windows, leakage-free chronological splits and the train-only scaler.

A sample is an integer window start ``s``: inputs are steps ``s .. s+L_in-1`` and targets the next
``L_out`` steps. Windows are gathered batch by batch from the raw (T, N, C) array, never materialised
in bulk, so memory stays proportional to the raw data.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import numpy as np
import torch

from stbench import UserError
from stbench.data.core import STData


@dataclass(frozen=True)
class WindowSpec:
    input_len: int = 12
    output_len: int = 12
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)

    @property
    def length(self) -> int:
        return self.input_len + self.output_len


def split_bounds(num_steps: int, split: tuple[float, float, float]) -> list[tuple[int, int]]:
    """Step ranges [begin, end) of train, val and test (chronological)."""
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1) > 1e-6:
        raise UserError(f"split {split} must be three positive fractions summing to 1, e.g. 0.6,0.2,0.2")
    train_end = int(round(split[0] * num_steps))
    val_end = int(round((split[0] + split[1]) * num_steps))
    return [(0, train_end), (train_end, val_end), (val_end, num_steps)]


def split_starts(num_steps: int, spec: WindowSpec) -> dict[str, np.ndarray]:
    """Window starts per split; a window crossing a split boundary belongs to no split."""
    starts = {}
    for name, (begin, end) in zip(("train", "val", "test"), split_bounds(num_steps, spec.split)):
        last = end - spec.length  # last start whose window ends inside [begin, end)
        if last < begin:
            raise UserError(f"the {name} split has {end - begin} steps, fewer than one window of "
                            f"{spec.length} steps; use a longer series or shorter windows")
        starts[name] = np.arange(begin, last + 1, dtype=np.int64)
    return starts


@dataclass(frozen=True)
class Scaler:
    """Per-channel z-score, fit on the observed training steps only."""
    mean: np.ndarray  # (C,)
    std: np.ndarray   # (C,)

    @classmethod
    def fit(cls, data: STData, train_end: int, chunk_bytes: int = 1 << 24) -> "Scaler":
        c = data.values.shape[-1]
        chunk = max(1, chunk_bytes // (8 * data.values[0].size))  # float64 blocks of ~16 MB
        total, total_sq, count = np.zeros(c), np.zeros(c), np.zeros(c)
        low, high = np.full(c, np.inf), np.full(c, -np.inf)   # observed range, to spot a constant target
        for start in range(0, train_end, chunk):
            block = np.asarray(data.values[start:min(start + chunk, train_end)], dtype=np.float64)
            observed = np.ones(block.shape, bool) if data.mask is None else np.asarray(
                data.mask[start:min(start + chunk, train_end)])
            low = np.minimum(low, np.where(observed, block, np.inf).min(axis=(0, 1)))
            high = np.maximum(high, np.where(observed, block, -np.inf).max(axis=(0, 1)))
            block = np.where(observed, block, 0.0)
            total += block.sum(axis=(0, 1))
            total_sq += (block ** 2).sum(axis=(0, 1))
            count += observed.sum(axis=(0, 1))
        if (count == 0).any():
            raise UserError(f"dataset {data.name}: channel(s) {np.flatnonzero(count == 0).tolist()} "
                            "have no observed training values")
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
        constant = (high <= low) | (std < 1e-8)
        for i in data.targets:   # a constant input channel is harmless; a constant target is not
            if constant[i]:
                channel = data.meta["channels"][i]
                raise UserError(f"dataset {data.name}: target channel {i} ({channel}) is constant "
                                f"({low[i]:g}) over the {train_end} training steps, so there is nothing "
                                "to forecast and relative metrics would be NaN; choose another target "
                                "channel (meta 'targets') or check the source data")
        std[std < 1e-8] = 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))


@dataclass
class Batch:
    x: torch.Tensor        # (B, L_in, N, C) normalised; missing inputs are 0 (the training mean)
    y: torch.Tensor        # (B, L_out, N, C_t) raw target units
    mask: torch.Tensor     # (B, L_out, N, C_t) bool: observed (and non-zero where the dataset masks zeros)


class Series:
    """The whole raw array on the compute device, with the scaler and the per-split window starts."""

    def __init__(self, data: STData, spec: WindowSpec, device: str | torch.device = "cpu"):
        self.data, self.spec, self.device = data, spec, torch.device(device)
        self.starts = split_starts(data.shape[0], spec)
        self.scaler = Scaler.fit(data, train_end=split_bounds(data.shape[0], spec.split)[0][1])
        self.targets = torch.as_tensor(data.targets, device=self.device)
        self.values = torch.as_tensor(np.asarray(data.values, dtype=np.float32), device=self.device)
        self.observed = None if data.mask is None else torch.as_tensor(np.asarray(data.mask), device=self.device)
        self.mean = torch.as_tensor(self.scaler.mean, device=self.device)
        self.std = torch.as_tensor(self.scaler.std, device=self.device)
        self.mask_zeros = data.mask_zeros          # stated by every dataset (STData refuses meta without it)
        self.inputs: torch.Tensor | None = None   # input channels fed to models (None: all)
        self.x_mean, self.x_std = self.mean, self.std

    def with_inputs(self, channels: list[int]) -> "Series":
        """The same series (no copy of the data) feeding only ``channels`` as model inputs."""
        view = copy.copy(self)
        view.inputs = torch.as_tensor(channels, device=self.device)
        view.x_mean, view.x_std = self.mean[view.inputs], self.std[view.inputs]
        return view

    @functools.cached_property
    def masked_target_share(self) -> float:
        """Share in [0, 1] of target readings (all steps, all target channels) left out of losses and
        metrics: missing, or 0 where the dataset masks zeros. Streamed over the raw array, computed once."""
        return self.data.masked_target_share()

    @property
    def num_locations(self) -> int:
        return self.data.shape[1]

    @property
    def num_channels(self) -> int:
        """Input channels fed to models."""
        return self.data.shape[2] if self.inputs is None else len(self.inputs)

    def split(self, name: str) -> "WindowSet":
        return WindowSet(self, self.starts[name])

    def scale_target(self, y_raw: torch.Tensor) -> torch.Tensor:
        return (y_raw - self.mean[self.targets]) / self.std[self.targets]

    def unscale_target(self, y_norm: torch.Tensor) -> torch.Tensor:
        return y_norm * self.std[self.targets] + self.mean[self.targets]

    def gather(self, starts: torch.Tensor, locations: torch.Tensor | None = None) -> Batch:
        steps = starts.to(self.device)[:, None] + torch.arange(self.spec.length, device=self.device)
        window = self.values[steps]                                   # (B, L_in + L_out, N, C)
        observed = None if self.observed is None else self.observed[steps]
        if locations is not None:
            window = window[:, :, locations]
            observed = None if observed is None else observed[:, :, locations]
        x, y = window[:, :self.spec.input_len], window[:, self.spec.input_len:, :, self.targets]
        x_observed = None if observed is None else observed[:, :self.spec.input_len]
        if self.inputs is not None:
            x = x[..., self.inputs]
            x_observed = None if x_observed is None else x_observed[..., self.inputs]
        x = (x - self.x_mean) / self.x_std
        if observed is None:
            mask = torch.ones_like(y, dtype=torch.bool)
        else:
            x = x.masked_fill(~x_observed, 0.0)
            mask = observed[:, self.spec.input_len:, :, self.targets]
        if self.mask_zeros:
            mask = mask & (y != 0)
        return Batch(x, y, mask)


def to_device(values, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` (an array, a list or a tensor) as a tensor on ``device``. Host data goes to CUDA
    through pinned memory without a wait: window ids, sample weights and location subsets are all
    that cross per batch (a series sits on its device once)."""
    t = torch.as_tensor(values, dtype=dtype)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class WindowSet:
    """The windows of one split, addressed by sample id 0..len-1."""

    def __init__(self, series: Series, starts: np.ndarray):
        self.series, self.starts = series, starts
        self._starts_t = torch.as_tensor(starts, device=series.device)

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, ids, locations: torch.Tensor | None = None) -> Batch:
        """The windows ``ids``, gathered from the series on its device (the data never leaves it)."""
        return self.series.gather(self._starts_t[to_device(ids, self.series.device, torch.long)], locations)

    def iter_batches(self, batch_size: int, ids=None, locations=None):
        ids = np.arange(len(self)) if ids is None else np.asarray(ids)
        for begin in range(0, len(ids), batch_size):
            yield self.batch(ids[begin:begin + batch_size], locations)

    def location_input(self, ids=None, locations=None) -> torch.Tensor:
        """Location-encoder input (N, L_in, C): mean of the normalised input windows (STemDist eq. 3)."""
        window_bytes = 4 * self.series.spec.length * self.series.values[0].numel()
        batch_size = max(1, (1 << 25) // window_bytes)  # gather ~32 MB at a time
        total = None
        count = 0
        for batch in self.iter_batches(batch_size, ids, locations):
            part = batch.x.sum(dim=0, dtype=torch.float64)
            total = part if total is None else total + part
            count += batch.x.shape[0]
        return (total / count).to(torch.float32).permute(1, 0, 2).contiguous()
