"""The canonical spatio-temporal dataset and its on-disk folder format.

One folder per dataset::

    meta.json        name, freq_minutes, channels, targets, mask_zeros, checksums, format_version, ...
    data.npy         float32 (T, N, C), raw units; missing entries hold 0 and are False in the mask
    mask.npy         bool (T, N, C), True = observed (optional: absent means fully observed)
    adj.npy          float32 (N, N) (optional)
    coords.npy       float64 (N, 2) latitude, longitude (optional)
    timestamps.npy   datetime64[s] (T,) (optional)
    .verified.json   cache of checksums already verified, keyed by file size and mtime (optional)

Arrays are opened memory-mapped, so loading costs no more memory than the pages actually touched.
Every file is checked against the SHA-256 that ``meta.json`` records for it (``data_sha256`` and
``optional_sha256``), so changed data is refused instead of being taken for the prepared dataset; a
verified checksum is cached with the file's size and mtime so large data is hashed once, not every run.

``mask_zeros`` has no default: every dataset states whether a 0 target reading means "missing"
(true, as in loop-detector speeds) or is a real value (false, as in counts or temperatures).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stbench import UserError

FORMAT_VERSION = 1
_OPTIONAL = ("mask", "adj", "coords", "timestamps")
VERIFIED_CACHE = ".verified.json"
MASK_ZEROS_HINT = ("state it: true when a 0 reading means \"missing\" (as in loop-detector speeds), "
                   "false when 0 is a real value (counts, amounts, temperatures)")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def meta_problem(meta, num_channels: int | None = None) -> str | None:
    """What is wrong with a dataset's meta (types, and ranges when ``num_channels`` is known), or None."""
    if not isinstance(meta, dict):
        return f"meta must be a JSON object (a dict), got {type(meta).__name__}"
    if "name" in meta and not isinstance(meta["name"], str):
        return f"'name' must be a string, got {meta['name']!r}"
    version = meta.get("format_version", FORMAT_VERSION)
    if not _is_int(version):
        return f"'format_version' must be an integer, got {version!r}"
    channels = meta.get("channels", [])          # absent channels and targets get defaults
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        return f"'channels' must be a list of channel names (strings), got {channels!r:.80}"
    targets = meta.get("targets", [0])
    if not isinstance(targets, list) or not targets or not all(_is_int(i) for i in targets):
        return f"'targets' must be a non-empty list of channel indices (integers), got {targets!r:.80}"
    if len(set(int(i) for i in targets)) != len(targets):
        return f"'targets' {targets} repeats a channel"
    if "mask_zeros" not in meta:
        return f"meta has no 'mask_zeros'; {MASK_ZEROS_HINT}"
    if not isinstance(meta["mask_zeros"], bool):
        return f"'mask_zeros' must be true or false, got {meta['mask_zeros']!r}; {MASK_ZEROS_HINT}"
    if "shape" in meta:
        shape = meta["shape"]
        if not isinstance(shape, list) or len(shape) != 3 or not all(_is_int(s) and s >= 0 for s in shape):
            return f"'shape' must be a list of three non-negative integers (T, N, C), got {shape!r:.80}"
    if "data_sha256" in meta and not isinstance(meta["data_sha256"], str):
        return f"'data_sha256' must be a hex string, got {meta['data_sha256']!r:.80}"
    optional = meta.get("optional_sha256", {})
    if not isinstance(optional, dict) or not all(k in _OPTIONAL and isinstance(v, str)
                                                 for k, v in optional.items()):
        return f"'optional_sha256' must map {'/'.join(_OPTIONAL)} to hex strings, got {optional!r:.80}"
    if num_channels is not None:
        if "channels" in meta and len(channels) != num_channels:
            return f"{len(channels)} channel names for {num_channels} channels"
        if any(not 0 <= i < num_channels for i in targets):
            return f"target channels {targets} out of range 0..{num_channels - 1}"
    return None


@dataclass
class STData:
    values: np.ndarray                     # (T, N, C) float32, raw units
    meta: dict = field(default_factory=dict)
    mask: np.ndarray | None = None         # (T, N, C) bool, True = observed
    adj: np.ndarray | None = None          # (N, N)
    coords: np.ndarray | None = None       # (N, 2) lat, lon
    timestamps: np.ndarray | None = None   # (T,)

    def __post_init__(self):
        if not isinstance(self.meta, dict):
            raise UserError(f"dataset meta must be a dict, got {type(self.meta).__name__}")
        self.meta.setdefault("format_version", FORMAT_VERSION)
        self.meta.setdefault("targets", [0])
        if getattr(self.values, "ndim", 0) == 3:
            self.meta.setdefault("channels", [f"c{i}" for i in range(self.values.shape[-1])])
        self.validate()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.values.shape)

    @property
    def name(self) -> str:
        name = self.meta.get("name", "unnamed")
        return name if isinstance(name, str) else repr(name)

    @property
    def targets(self) -> list[int]:
        return [int(i) for i in self.meta["targets"]]

    @property
    def mask_zeros(self) -> bool:
        return self.meta["mask_zeros"]

    def validate(self) -> None:
        """Reject shapes, meta and values that would silently corrupt a benchmark."""
        v = self.values
        if v.ndim != 3:
            raise UserError(f"dataset {self.name}: values must be (T, N, C), got shape {v.shape}")
        t, n, c = v.shape
        if t < 2 or n < 1 or c < 1:
            raise UserError(f"dataset {self.name}: empty values of shape {v.shape}")
        problem = meta_problem(self.meta, c)
        if problem:
            raise UserError(f"dataset {self.name}: {problem}")
        if self.mask is not None and self.mask.shape != v.shape:
            raise UserError(f"dataset {self.name}: mask shape {self.mask.shape} != values shape {v.shape}")
        if self.mask is not None and self.mask.dtype != np.bool_:
            raise UserError(f"dataset {self.name}: mask must be bool (True = observed), "
                            f"got {self.mask.dtype}")
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

    def masked_target_share(self, chunk_bytes: int = 1 << 24) -> float:
        """Share of target readings (all steps, all target channels) that losses and metrics ignore:
        missing in the mask, or 0 where the dataset masks zeros. Streamed in time chunks."""
        t, n, _ = self.values.shape
        targets = self.targets
        per_step = n * len(targets)
        chunk = max(1, chunk_bytes // max(1, 4 * per_step))
        hidden = 0
        for start in range(0, t, chunk):
            stop = min(t, start + chunk)
            masked = None
            if self.mask is not None:
                masked = ~np.asarray(self.mask[start:stop][..., targets])
            if self.mask_zeros:
                zeros = np.asarray(self.values[start:stop][..., targets]) == 0
                masked = zeros if masked is None else masked | zeros
            if masked is not None:
                hidden += int(np.count_nonzero(masked))
        return hidden / (t * per_step)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)   # an interrupted save leaves no complete folder
        files = {"data.npy": folder / "data.npy"}
        np.save(files["data.npy"], np.ascontiguousarray(self.values, dtype=np.float32))
        for name in _OPTIONAL:
            arr = getattr(self, name)
            path = folder / f"{name}.npy"
            if arr is not None:
                np.save(path, arr)
                files[name] = path
            else:
                path.unlink(missing_ok=True)             # a stale array from an earlier preparation
        cache = {}
        digests = {}
        for key, path in files.items():
            digests[key] = file_sha256(path)
            cache[path.name] = dict(_stat_key(path), sha256=digests[key])
        meta = dict(self.meta, shape=list(self.shape), format_version=FORMAT_VERSION,
                    data_sha256=digests.pop("data.npy"), optional_sha256=digests)
        _write_cache(folder, cache)
        tmp = folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        tmp.replace(folder / "meta.json")  # meta.json last: its presence marks a complete folder
        self.meta = meta
        return folder

    @classmethod
    def load(cls, folder: str | Path, prepare_command: str | None = None) -> "STData":
        """Open a prepared folder memory-mapped, after checking meta.json and every file's checksum.

        ``prepare_command`` is what the user should run to rebuild the folder (default: a generic
        ``stbench prepare <folder name> --source PATH``)."""
        folder = Path(folder)
        redo = prepare_command or f"stbench prepare {folder.name} --source PATH"
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            raise UserError(f"no prepared dataset in {folder} (meta.json missing); run `{redo}`")
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise UserError(f"corrupt dataset folder {folder}: cannot read meta.json ({_first_line(err)}); "
                            f"re-run `{redo}`") from err
        problem = meta_problem(meta)
        if problem:
            raise UserError(f"corrupt meta.json in {folder}: {problem}; re-run `{redo}`")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{folder} has format version {meta['format_version']}; "
                            f"this stbench reads up to {FORMAT_VERSION}: upgrade stbench")
        try:
            values = np.load(folder / "data.npy", mmap_mode="c")
            extras = {name: np.load(folder / f"{name}.npy", mmap_mode="c")
                      for name in _OPTIONAL if (folder / f"{name}.npy").exists()}
        except (OSError, ValueError) as err:
            raise UserError(f"corrupt dataset folder {folder} ({_first_line(err)}); re-run `{redo}`") from err
        if tuple(meta.get("shape", values.shape)) != values.shape:
            raise UserError(f"corrupt dataset folder {folder}: data.npy shape {values.shape} "
                            f"!= meta.json shape {tuple(meta['shape'])}; re-run `{redo}`")
        if values.ndim == 3:
            problem = meta_problem(meta, values.shape[-1])
            if problem:
                raise UserError(f"corrupt meta.json in {folder}: {problem}; re-run `{redo}`")
        verify_checksums(folder, meta, redo)
        return cls(values=values, meta=meta, **extras)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


# ------------------------------------------------------------------------------------------ checksums
def verify_checksums(folder: Path, meta: dict, redo: str) -> None:
    """Compare every file that meta.json has a checksum for; re-hash only files whose size or mtime
    differ from the cached verification. Raises a one-line UserError on any mismatch."""
    expected = {}
    if "data_sha256" in meta:
        expected["data.npy"] = meta["data_sha256"]
    if "optional_sha256" in meta:
        optional = meta["optional_sha256"]
        for name in _OPTIONAL:
            path = folder / f"{name}.npy"
            if name in optional:
                if not path.exists():
                    raise UserError(f"corrupt dataset folder {folder}: {path.name} is missing although "
                                    f"meta.json lists it; re-run `{redo}`")
                expected[path.name] = optional[name]
            elif path.exists():
                raise UserError(f"corrupt dataset folder {folder}: {path.name} was not written by "
                                f"`stbench prepare` (meta.json has no checksum for it); remove it or "
                                f"re-run `{redo}`")
    if not expected:
        return
    cache = _read_cache(folder)
    updated = False
    for filename, want in expected.items():
        path = folder / filename
        key = _stat_key(path)
        entry = cache.get(filename)
        if isinstance(entry, dict) and entry.get("sha256") == want and \
                all(entry.get(k) == v for k, v in key.items()):
            continue
        got = file_sha256(path)
        if got != want:
            raise UserError(f"{filename} in {folder} does not match the checksum in meta.json (the data "
                            f"changed after it was prepared); re-run `{redo}`")
        cache[filename] = dict(key, sha256=got)
        updated = True
    if updated:
        _write_cache(folder, cache)


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_cache(folder: Path) -> dict:
    try:
        cache = json.loads((folder / VERIFIED_CACHE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(folder: Path, cache: dict) -> None:
    """Best effort: a read-only folder just means the checksums are verified again next time."""
    tmp = folder / f"{VERIFIED_CACHE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(cache, indent=1))
        tmp.replace(folder / VERIFIED_CACHE)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file, read in blocks (never whole into memory)."""
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
