"""Cache files that can be loaded without running code: tensors and plain containers only.

``torch.load(..., weights_only=False)`` unpickles arbitrary objects, so a crafted file in a cache
folder would execute code when a run reuses it. Everything stbench caches (condensed sets, expert
trajectories) is written here as *plain data*: dicts with string keys, lists, tuples, str, int,
float, bool, None and tensors. NumPy arrays are stored as tensors under a tagged dict and come back
as arrays; NumPy scalars become Python numbers. Files are read with ``weights_only=True``, which
refuses anything else on every torch version stbench supports (>= 2.2), and a file that cannot be
read, or is not plain data, loads as ``None`` so the caller recomputes it.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import torch

from stbench import warn

_NUMPY_TAG = "__numpy__"


def to_plain(value):
    """``value`` as plain data (NumPy arrays tagged as tensors); TypeError for anything else."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"cannot cache a NumPy array of dtype {value.dtype}")
        return {_NUMPY_TAG: torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("cached dicts must have string keys")
        if _NUMPY_TAG in value:
            raise TypeError(f"{_NUMPY_TAG!r} is a reserved key")
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    raise TypeError(f"cannot cache a {type(value).__name__}: only tensors, arrays and plain containers")


def from_plain(value):
    """Inverse of ``to_plain``."""
    if isinstance(value, dict):
        if set(value) == {_NUMPY_TAG} and isinstance(value[_NUMPY_TAG], torch.Tensor):
            return value[_NUMPY_TAG].numpy()
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(v) for v in value)
    return value


def save_plain(path: str | Path, payload) -> Path:
    """Write ``payload`` atomically (a unique temp file, then rename): a killed save leaves no file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(to_plain(payload), tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_plain(path: str | Path):
    """The payload at ``path``, or None (with a one-line warning) if it is unreadable or not plain data."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return from_plain(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as err:  # noqa: BLE001 - any failure means: do not trust, recompute
        warn(f"ignoring unreadable cache file {path} ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
             "recomputing it")
        return None
