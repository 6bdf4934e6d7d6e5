"""Streamed preparation: write a canonical dataset folder chunk by chunk, never the whole array in memory.

A reader that can produce its data in time chunks returns a ``StreamSource`` (shape, meta, graph,
coordinates, timestamps and ``read(start, stop) -> (t, N, C)`` float array, NaN = missing);
``write_source`` turns it into the same folder ``STData.save`` writes (``data.npy``, ``mask.npy``,
``adj.npy``, ``coords.npy``, ``timestamps.npy``, ``meta.json`` with checksums, ``.verified.json``).

Memory: the output arrays are ``np.lib.format.open_memmap`` files; each chunk is written, flushed and
its pages are released from this process (``madvise(MADV_DONTNEED)``), so the resident set holds about
one input chunk plus one output chunk, whatever the size of the output. Checksums and the statistics
(masked share of the targets, locations without any reading) are computed by reading the written
files back in blocks.

The folder is built under ``.<name>.partial-<pid>`` next to its final place and renamed into place
only when complete, so a failed or refused preparation leaves an earlier preparation untouched.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from stbench import UserError, warn
from stbench.data.core import FORMAT_VERSION, MASK_ZEROS_HINT, VERIFIED_CACHE, file_sha256, meta_problem

CHUNK_BYTES = 1 << 26          # about 64 MiB of float32 output per chunk


@dataclass
class StreamSource:
    """A dataset that a reader can deliver in time chunks (``read(start, stop)``, NaN = missing)."""
    shape: tuple[int, int, int]
    meta: dict
    read: Callable[[int, int], np.ndarray]
    adj: np.ndarray | None = None
    coords: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    empty_locations: str = "warn"          # "warn" or "error": a (location, channel) never observed
    chunk_steps: int | None = None         # default: about CHUNK_BYTES of output per chunk
    notes: list[str] = field(default_factory=list)


def chunk_steps(n: int, c: int, chunk_bytes: int = CHUNK_BYTES, multiple: int = 1) -> int:
    steps = max(1, chunk_bytes // max(1, 4 * n * c))
    return max(multiple, steps - steps % multiple)


def release_rows(arr: np.ndarray, start: int, stop: int) -> None:
    """Flush rows [start, stop) of a memmap to its file and drop them from this process's memory."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or stop <= start:
        return
    row = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
    base = int(getattr(arr, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    lo = base + start * row
    hi = base + stop * row
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), hi + (-hi) % mmap.PAGESIZE)
    if hi <= lo:
        return
    try:
        mm.flush(lo, hi - lo)
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)   # shared file mapping: the data stays in the file
    except (OSError, ValueError):
        pass


def peak_rss_bytes() -> int:
    """This process's peak resident set (bytes), from getrusage."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


# ------------------------------------------------------------------------------------------ writer
class DatasetWriter:
    """Writes data.npy (and mask.npy when something is missing) chunk by chunk into a staging folder.

    Use as a context manager; ``finish`` completes the folder and moves it into place, leaving the
    context without ``finish`` (or with an exception) removes the staging folder."""

    def __init__(self, folder: str | Path, shape: tuple[int, int, int]):
        self.folder = Path(folder)
        t, n, c = (int(s) for s in shape)
        if t < 2 or n < 1 or c < 1:
            raise UserError(f"dataset {self.folder.name}: empty values of shape {(t, n, c)}")
        self.shape = (t, n, c)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.folder.parent / f".{self.folder.name}.partial-{os.getpid()}"
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir()
        self.values = np.lib.format.open_memmap(self.staging / "data.npy", mode="w+", dtype=np.float32,
                                                shape=self.shape)
        self.mask: np.ndarray | None = None
        self.done = False

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self.done:
            self.abort()

    def abort(self) -> None:
        self.values = self.mask = None
        shutil.rmtree(self.staging, ignore_errors=True)

    def _ensure_mask(self) -> np.ndarray:
        if self.mask is None:
            self.mask = np.lib.format.open_memmap(self.staging / "mask.npy", mode="w+", dtype=np.bool_,
                                                  shape=self.shape)
            step = chunk_steps(self.shape[1], self.shape[2], multiple=1) * 4
            for start in range(0, self.shape[0], step):
                stop = min(self.shape[0], start + step)
                self.mask[start:stop] = True
                release_rows(self.mask, start, stop)
        return self.mask

    def write(self, start: int, block: np.ndarray, observed: np.ndarray | None = None) -> None:
        """Rows [start, start + len(block)): NaN/inf and ``observed`` False become missing (0, mask False)."""
        block = np.asarray(block)
        stop = start + block.shape[0]
        if block.shape[1:] != self.shape[1:] or start < 0 or stop > self.shape[0]:
            raise ValueError(f"chunk of shape {block.shape} at {start} does not fit {self.shape}")
        seen = np.isfinite(block)
        if observed is not None:
            seen &= observed
        complete = bool(seen.all())
        self.values[start:stop] = block if complete else np.where(seen, block, 0)
        release_rows(self.values, start, stop)
        if not complete or self.mask is not None:
            mask = self._ensure_mask()
            mask[start:stop] = seen
            release_rows(mask, start, stop)

    def read_back(self, start: int, stop: int) -> np.ndarray:
        """A copy of rows [start, stop) as written (missing entries read 0)."""
        out = np.array(self.values[start:stop])
        release_rows(self.values, start, stop)
        return out

    # -- completion -----------------------------------------------------------------------------
    def _scan(self, targets: list[int]) -> dict:
        """Checksums and statistics from the written files, read back in blocks."""
        t, n, c = self.shape
        self.values.flush()
        if self.mask is not None:
            self.mask.flush()
        self.values = self.mask = None          # unmap before reading the files back
        data_path, mask_path = self.staging / "data.npy", self.staging / "mask.npy"
        has_mask = mask_path.exists()
        seen_any = np.zeros((n, c), dtype=bool)
        zeros = missing = 0
        digests = {"data": hashlib.sha256(), "mask": hashlib.sha256()}
        step = chunk_steps(n, c)
        with open(data_path, "rb") as data_fh, (open(mask_path, "rb") if has_mask else _Null()) as mask_fh:
            _header(data_fh, digests["data"])
            if has_mask:
                _header(mask_fh, digests["mask"])
            for start in range(0, t, step):
                rows = min(step, t - start)
                raw = data_fh.read(rows * n * c * 4)
                digests["data"].update(raw)
                block = np.frombuffer(raw, dtype=np.float32).reshape(rows, n, c)
                if has_mask:
                    mraw = mask_fh.read(rows * n * c)
                    digests["mask"].update(mraw)
                    seen = np.frombuffer(mraw, dtype=np.bool_).reshape(rows, n, c)
                    seen_any |= seen.any(axis=0)
                    missing += int(np.count_nonzero(~seen[..., targets]))
                    zeros += int(np.count_nonzero((block[..., targets] == 0) & seen[..., targets]))
                else:
                    seen_any[:] = True
                    zeros += int(np.count_nonzero(block[..., targets] == 0))
        out = {"data_sha256": digests["data"].hexdigest(), "seen_any": seen_any, "zeros": zeros,
               "missing": missing, "readings": t * n * len(targets)}
        if has_mask:
            out["mask_sha256"] = digests["mask"].hexdigest()
            if missing == 0 and bool(seen_any.all()) and _all_true(mask_path):
                mask_path.unlink()              # nothing turned out missing: no mask file
                del out["mask_sha256"]
        return out

    def finish(self, meta: dict, adj=None, coords=None, timestamps=None, *, mask_zeros: bool | None,
               empty_locations: str = "warn", zero_hint: str = "") -> tuple[Path, dict]:
        """Validate, write the small arrays and meta.json, move the folder into place.

        ``mask_zeros=None`` means the user has not said: refused (UserError) when a target reads 0."""
        t, n, c = self.shape
        name = self.folder.name
        meta = dict(meta, name=name)
        meta.setdefault("channels", [f"c{i}" for i in range(c)])
        meta.setdefault("targets", [0])
        probe = dict(meta, mask_zeros=bool(mask_zeros) if mask_zeros is not None else False)
        problem = meta_problem(probe, c)
        if problem:
            raise UserError(f"dataset {name}: {problem}")
        targets = [int(i) for i in meta["targets"]]
        stats = self._scan(targets)
        empty = np.argwhere(~stats["seen_any"])
        if empty.size:
            ids = meta.get("location_ids")
            label = (lambda i: f"location {ids[i]!r}") if isinstance(ids, list) and len(ids) == n else \
                (lambda i: f"location {i}")
            where = ", ".join(f"{label(i)} channel {meta['channels'][j]!r}" for i, j in empty[:3])
            line = (f"{len(empty)} location/channel series of {name} have no reading at any step "
                    f"(first: {where})")
            if empty_locations == "error":
                raise UserError(f"{line}: remove those columns (or locations) from the input")
            warn(f"{line}: they stay in the dataset, masked throughout")
        share_zero = stats["zeros"] / max(1, stats["readings"])
        if mask_zeros is None:
            if stats["zeros"]:
                raise UserError(f"{share_zero:.2%} of the target readings of {name} are 0: say what a 0 "
                                f"means with --mask-zeros yes (0 = missing, as in loop-detector speeds) or "
                                f"--mask-zeros no (0 is a real value: counts, amounts, temperatures)"
                                f"{zero_hint}")
            mask_zeros = False
            meta["mask_zeros_note"] = "no target reads 0, so masking zeros would change nothing"
        meta["mask_zeros"] = bool(mask_zeros)
        files = {"data": stats["data_sha256"]}
        if "mask_sha256" in stats:
            files["mask"] = stats["mask_sha256"]
        for key, arr in (("adj", adj), ("coords", coords), ("timestamps", timestamps)):
            if arr is not None:
                np.save(self.staging / f"{key}.npy", arr)
                files[key] = file_sha256(self.staging / f"{key}.npy")
        cache = {}
        for key, digest in files.items():
            path = self.staging / f"{key}.npy"
            st = path.stat()
            cache[path.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
        meta.update(shape=[t, n, c], format_version=FORMAT_VERSION, data_sha256=files.pop("data"),
                    optional_sha256=files)
        problem = meta_problem(meta, c)
        if problem:
            raise UserError(f"dataset {name}: {problem}")
        (self.staging / VERIFIED_CACHE).write_text(json.dumps(cache, indent=1))
        (self.staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        self._move_into_place()
        self.done = True
        hidden = stats["missing"] + (stats["zeros"] if mask_zeros else 0)
        stats["masked_share"] = hidden / max(1, stats["readings"])
        stats["zero_share"] = share_zero
        stats["meta"] = meta
        return self.folder, stats

    def _move_into_place(self) -> None:
        old = None
        if self.folder.exists():
            old = self.folder.parent / f".{self.folder.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            self.folder.rename(old)
        self.staging.rename(self.folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _header(fh, digest) -> int:
    """Read (and hash) an .npy header; return its length."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        np.lib.format.read_array_header_1_0(fh)
    else:
        np.lib.format.read_array_header_2_0(fh)
    end = fh.tell()
    fh.seek(0)
    digest.update(fh.read(end))
    return end


def _all_true(path: Path) -> bool:
    arr = np.load(path, mmap_mode="r")
    step = 1 << 24
    flat = arr.reshape(-1)
    return all(bool(flat[i:i + step].all()) for i in range(0, flat.size, step))


# ------------------------------------------------------------------------------------------ driver
def write_source(source: StreamSource, folder: str | Path, *, mask_zeros: bool | None = None,
                 zero_hint: str = "") -> tuple[Path, dict]:
    """Stream a ``StreamSource`` into ``folder``; ``mask_zeros`` overrides ``source.meta``."""
    t, n, c = source.shape
    if source.adj is not None and np.shape(source.adj) != (n, n):
        raise UserError(f"adjacency of shape {np.shape(source.adj)} does not fit {n} locations: "
                        f"expected ({n}, {n})")
    if source.coords is not None and np.shape(source.coords) != (n, 2):
        raise UserError(f"coordinates of shape {np.shape(source.coords)} do not fit {n} locations: "
                        f"expected ({n}, 2) latitude, longitude in degrees")
    if source.timestamps is not None and len(source.timestamps) != t:
        raise UserError(f"{len(source.timestamps)} timestamps for {t} steps: expected one per step")
    if mask_zeros is None:
        mask_zeros = source.meta.get("mask_zeros")
    if mask_zeros is not None and not isinstance(mask_zeros, bool):
        raise UserError(f"'mask_zeros' must be true or false, got {mask_zeros!r}; {MASK_ZEROS_HINT}")
    meta = {k: v for k, v in source.meta.items() if k != "mask_zeros"}
    # chunks of at most CHUNK_BYTES, and at most 1/16 of the output: small sets stay within 2x too
    budget = min(CHUNK_BYTES, max(1 << 20, 4 * t * n * c // 16))
    step = min(source.chunk_steps or t, chunk_steps(n, c, budget))
    with DatasetWriter(folder, source.shape) as writer:
        for start in range(0, t, step):
            stop = min(t, start + step)
            block = source.read(start, stop)
            if block.shape != (stop - start, n, c):
                raise UserError(f"reading steps {start}..{stop} gave shape {block.shape}, "
                                f"expected {(stop - start, n, c)}: the input changed while being read?")
            writer.write(start, block)
        for note in source.notes:
            warn(note)
        return writer.finish(meta, source.adj, source.coords, source.timestamps, mask_zeros=mask_zeros,
                             empty_locations=source.empty_locations, zero_hint=zero_hint)


def report_share(name: str, share: float, mask_zeros: bool, warn_above: float = 0.5) -> None:
    """The same stderr line as ``catalog.report_masked_share``, from streamed statistics."""
    what = ("missing or 0 (mask_zeros is true)" if mask_zeros
            else "missing (zeros are kept: mask_zeros is false)")
    line = f"{name}: {share:.2%} of target readings are masked out of losses and metrics: {what}"
    if share > warn_above:
        fix = ("if 0 is a real value here, the dataset should state mask_zeros: false" if mask_zeros
               else "check how the source marks missing readings")
        warn(f"{line}; {fix}")
    else:
        print(f"stbench: {line}", file=sys.stderr, flush=True)


__all__ = ["CHUNK_BYTES", "DatasetWriter", "StreamSource", "chunk_steps", "peak_rss_bytes", "release_rows",
           "report_share", "write_source"]
