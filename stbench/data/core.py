"""The canonical spatio-temporal dataset and its on-disk folder format.

One folder per dataset::

    meta.json        name, freq_minutes, channels, targets, source checksums, format_version, ...
    data.npy         float32 (T, N, C), raw units; missing entries hold 0 and are False in the mask
    mask.npy         bool (T, N, C), True = observed (optional: absent means fully observed)
    adj.npy          float32 (N, N) (optional)
    coords.npy       float64 (N, 2) latitude, longitude (optional)
    timestamps.npy   datetime64[s] (T,) (optional)

Arrays are opened memory-mapped, so loading costs no more memory than the pages actually touched.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stbench import UserError

FORMAT_VERSION = 1
_OPTIONAL = ("mask", "adj", "coords", "timestamps")


@dataclass
class STData:
    values: np.ndarray                     # (T, N, C) float32, raw units
    meta: dict = field(default_factory=dict)
    mask: np.ndarray | None = None         # (T, N, C) bool, True = observed
    adj: np.ndarray | None = None          # (N, N)
    coords: np.ndarray | None = None       # (N, 2) lat, lon
    timestamps: np.ndarray | None = None   # (T,)

    def __post_init__(self):
        self.meta.setdefault("format_version", FORMAT_VERSION)
        self.meta.setdefault("targets", [0])
        self.meta.setdefault("channels", [f"c{i}" for i in range(self.values.shape[-1])])
        self.meta.setdefault("mask_zeros", True)
        self.validate()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def name(self) -> str:
        return self.meta.get("name", "unnamed")

    @property
    def targets(self) -> list[int]:
        return list(self.meta["targets"])

    def validate(self) -> None:
        """Reject shapes and values that would silently corrupt a benchmark."""
        v = self.values
        if v.ndim != 3:
            raise UserError(f"dataset {self.name}: values must be (T, N, C), got shape {v.shape}")
        t, n, c = v.shape
        if t < 2 or n < 1 or c < 1:
            raise UserError(f"dataset {self.name}: empty values of shape {v.shape}")
        if len(self.meta["channels"]) != c:
            raise UserError(f"dataset {self.name}: {len(self.meta['channels'])} channel names for {c} channels")
        if not self.targets or any(not 0 <= i < c for i in self.targets):
            raise UserError(f"dataset {self.name}: target channels {self.targets} out of range 0..{c - 1}")
        if self.mask is not None and self.mask.shape != v.shape:
            raise UserError(f"dataset {self.name}: mask shape {self.mask.shape} != values shape {v.shape}")
        if self.adj is not None and self.adj.shape != (n, n):
            raise UserError(f"dataset {self.name}: adjacency shape {self.adj.shape} != ({n}, {n})")
        if self.coords is not None and self.coords.shape != (n, 2):
            raise UserError(f"dataset {self.name}: coordinates shape {self.coords.shape} != ({n}, 2)")
        if self.timestamps is not None and len(self.timestamps) != t:
            raise UserError(f"dataset {self.name}: {len(self.timestamps)} timestamps for {t} steps")
        self._check_finite()

    def _check_finite(self, chunk_bytes: int = 1 << 24) -> None:
        """NaN/inf must be marked missing in the mask, never hidden in the values."""
        chunk = max(1, chunk_bytes // max(1, self.values[0].nbytes))
        for start in range(0, self.values.shape[0], chunk):
            block = np.asarray(self.values[start:start + chunk])
            bad = ~np.isfinite(block)
            if bad.any():
                step = start + int(np.argwhere(bad)[0][0])
                raise UserError(
                    f"dataset {self.name}: {int(bad.sum())}+ NaN/inf values (first at step {step}); "
                    "mark missing readings in mask.npy with 0 in data.npy (stbench prepare does this)"
                )

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "data.npy", np.ascontiguousarray(self.values, dtype=np.float32))
        for name in _OPTIONAL:
            arr = getattr(self, name)
            if arr is not None:
                np.save(folder / f"{name}.npy", arr)
        meta = dict(self.meta, shape=list(self.shape), format_version=FORMAT_VERSION,
                    data_sha256=file_sha256(folder / "data.npy"))
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(folder / "meta.json")  # meta.json last: its presence marks a complete folder
        self.meta = meta
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "STData":
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise UserError(f"no prepared dataset in {folder} (meta.json missing); run `stbench prepare`")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format_version", 0) > FORMAT_VERSION:
                raise UserError(f"{folder} has format version {meta['format_version']}; "
                                f"this stbench reads up to {FORMAT_VERSION}: upgrade stbench")
            values = np.load(folder / "data.npy", mmap_mode="c")
            extras = {name: np.load(folder / f"{name}.npy", mmap_mode="c")
                      for name in _OPTIONAL if (folder / f"{name}.npy").exists()}
        except UserError:
            raise
        except (OSError, ValueError, json.JSONDecodeError) as err:
            raise UserError(f"corrupt dataset folder {folder} ({err}); re-run `stbench prepare`") from err
        if tuple(meta.get("shape", values.shape)) != values.shape:
            raise UserError(f"corrupt dataset folder {folder}: data.npy shape {values.shape} "
                            f"!= meta.json shape {tuple(meta['shape'])}; re-run `stbench prepare`")
        return cls(values=values, meta=meta, **extras)


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def array_sha256(arr: np.ndarray, chunk: int = 1 << 24) -> str:
    """Checksum of an in-memory array (synthetic datasets), streamed to bound memory."""
    digest = hashlib.sha256(str((arr.shape, arr.dtype)).encode())
    flat = arr.reshape(-1)
    for start in range(0, flat.size, chunk):
        digest.update(np.ascontiguousarray(flat[start:start + chunk]).tobytes())
    return digest.hexdigest()
