"""Shared fixtures: a tiny synthetic dataset built in memory, and the shared real data (optional)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from stbench.data.core import STData


def tiny_data(steps: int = 240, locations: int = 8, channels: int = 2, missing: float = 0.05,
              seed: int = 0) -> STData:
    """A small periodic series with a few missing readings."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(1, locations, channels))
    values = (50 + 10 * np.sin(2 * np.pi * t / 24 + phase) + rng.normal(0, 1, (steps, locations, channels)))
    mask = rng.random(values.shape) >= missing
    values = np.where(mask, values, 0.0).astype(np.float32)
    return STData(values=values, mask=mask,
                  meta={"name": "tiny", "channels": ["a", "b"][:channels], "mask_zeros": True})


@pytest.fixture
def tiny():
    return tiny_data()


@pytest.fixture
def shared_data() -> Path:
    root = os.environ.get("STBENCH_SHARED_DATA")
    if not root:
        pytest.skip("set STBENCH_SHARED_DATA=../shared/data to run the real-data tests")
    return Path(root)


def make_context(series, seed: int = 0, preset: str = "smoke", defaults: dict | None = None):
    """A RunContext over a Series, as the runner builds it (CPU, seeded)."""
    import torch

    from stbench.measure import Meter
    from stbench.plugins import load_builtin
    from stbench.protocols import RunContext
    from stbench.registry import MODELS

    load_builtin()
    torch.manual_seed(seed)

    def factory(num_locations, model_name=None, in_channels=None):
        cls = MODELS.get(model_name or "mtgnn-le")
        return cls(num_locations, in_channels or series.num_channels, len(series.data.targets),
                   series.spec.input_len, series.spec.output_len)

    return RunContext(seed=seed, device=torch.device("cpu"), rng=np.random.default_rng(seed),
                      torch_generator=torch.Generator().manual_seed(seed), meter=Meter(), preset=preset,
                      series=series, model_factory=factory, dataset_defaults=defaults or {"batch_size": 16})
