"""The results store: one JSON line per run in ``runs.jsonl``, append-only and safe against a kill.

Guarantees:

* Each record is written as one line with ``write`` calls checked for their full length, then
  ``fsync``. A short write (a full disk) or a failed write truncates the file back to where the line
  began and raises ``StoreError``: no partial line is left, and the CLI exits non-zero. A process
  killed mid-write can leave at most one partial last line; readers skip it and the next append
  starts on a fresh line.
* Reading validates every line: a line that is not JSON, or a JSON object without the keys and
  types of a run record (``validate_record``), is skipped, and one warning line gives their count.
* A re-run skips every run_id already finished (``ok``, ``incompatible``, and ``oom`` unless the
  caller asks to retry it); a ``failed`` run is retried and its newer record supersedes the old one.
* Condensed sets are kept under ``artifacts/`` as plain data (``stbench.safe_io``): loading one never
  runs code, and one that is unreadable or malformed is recomputed.

Concurrent writers (several ``stbench run`` processes, workers, Ray tasks' driver) share a store:

* Appends take a lock made with ``mkdir`` (atomic on local disks and on NFS, unlike ``flock``), so
  lines never interleave; a lock older than ``LOCK_STALE_S`` is left by a killed process and broken.
* Before running a cell, a driver claims it: ``claims/<run_id>`` created with ``O_CREAT | O_EXCL``
  (atomic on NFSv3 and later). A live driver refreshes its claims' mtime every ``CLAIM_TTL_S / 4``;
  a claim not refreshed for ``CLAIM_TTL_S`` (environment ``STBENCH_CLAIM_TTL``, default 300 s) was
  left by a killed process and is taken over by renaming it away, which only one taker can do; a
  claim whose owner was a process of this host that no longer exists is taken over at once.
  Clocks of the machines sharing a store must agree to well within the TTL.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from stbench import StoreError, UserError, warn
from stbench.safe_io import load_plain, save_plain

FINISHED = ("ok", "oom", "incompatible", "timeout")       # skipped on a re-run (all but ok: unless retried)
STATUSES = ("ok", "failed", "oom", "incompatible", "timeout", "crashed")
LOCK_STALE_S = 60.0
_REQUIRED = {"run_id": str, "status": str, "dataset": str, "method": str, "seed": int, "model": str,
             "budget_label": str, "time_s": dict}


def validate_record(record) -> str | None:
    """Why ``record`` is not a run record, or None if it is one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in _REQUIRED.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"{key!r} missing or not {kind.__name__}"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}"
    if record["status"] == "ok":
        test = (record.get("metrics") or {}).get("test") if isinstance(record.get("metrics"), dict) else None
        if not isinstance(test, dict) or not all(isinstance(test.get(k), (int, float)) for k in ("rel_mae", "rel_rmse")):
            return "an ok record without finite test metrics"
    return None


def run_id(config: dict) -> str:
    """Hash of the resolved configuration that determines a run's result."""
    return hashlib.sha1(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _clean(value):
    """JSON-safe: NaN/inf become null so every line is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class ResultStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / "runs.jsonl"
        self.artifacts = self.root / "artifacts"

    def append(self, record: dict) -> None:
        """Write one record as one line, all or nothing (see the module docstring)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(_clean(record), sort_keys=True, default=str) + "\n").encode()
        with self._locked():
            self._append_line(line)

    def _append_line(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            begin = os.fstat(fd).st_size
            if begin and self._ends_mid_line():
                line = b"\n" + line
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as err:
                os.ftruncate(fd, begin)   # leave no partial line behind
                raise StoreError(f"could not write a record to {self.path} ({err.strerror or err}); "
                                 "free space or fix the folder, then re-run: finished cells are kept") from err
        finally:
            os.close(fd)

    def _ends_mid_line(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"

    @contextmanager
    def _locked(self):
        """Hold the store's append lock (a directory: ``mkdir`` is atomic everywhere)."""
        lock = self.root / "runs.jsonl.lock"
        deadline = time.monotonic() + 2 * LOCK_STALE_S
        while True:
            try:
                lock.mkdir()
                break
            except FileExistsError:
                if _age(lock) > LOCK_STALE_S:
                    _take_away(lock, LOCK_STALE_S)
                elif time.monotonic() > deadline:
                    raise StoreError(f"{lock} has been held for over {2 * LOCK_STALE_S:.0f} s; remove it "
                                     "if no stbench process is running") from None
                time.sleep(0.01)
        try:
            yield
        finally:
            lock.rmdir()

    # -- claims: one driver per cell ----------------------------------------------------------------
    def claim(self, rid: str) -> bool:
        """Take the cell ``rid`` for this process; False if a live process holds it."""
        path = self.root / "claims" / rid
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _age(path) <= claim_ttl() and not _owner_dead(path):
                    return False
                _take_away(path, claim_ttl() if not _owner_dead(path) else -1.0)   # its owner was killed
                continue
            os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}).encode())
            os.close(fd)
            return True
        return False

    def refresh_claims(self, rids) -> None:
        for rid in rids:
            try:
                os.utime(self.root / "claims" / rid)
            except FileNotFoundError:
                pass

    def release(self, rid: str) -> None:
        (self.root / "claims" / rid).unlink(missing_ok=True)

    def check_writable(self) -> None:
        """Refuse, before any compute, a results folder that cannot be written."""
        writable_dir(self.root, "--results")

    def latest(self, rid: str) -> dict | None:
        """The newest valid record of ``rid`` (re-read now: another process may have written it)."""
        return next((r for r in self.records(quiet=True) if r["run_id"] == rid), None)

    def records(self, quiet: bool = False) -> list[dict]:
        """Latest valid record per run_id, in first-seen order; invalid lines are skipped with a warning."""
        if not self.path.exists():
            return []
        latest: dict[str, dict] = {}
        skipped: list[str] = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                    why = "not JSON (a partial line?)"
                else:
                    why = validate_record(record)
                if why:
                    skipped.append(f"line {number}: {why}")
                    continue
                latest[record["run_id"]] = record
        if skipped and not quiet:
            warn(f"skipped {len(skipped)} invalid line(s) of {self.path} ({skipped[0]}"
                 f"{', ...' if len(skipped) > 1 else ''})")
        return list(latest.values())

    def require_records(self) -> list[dict]:
        if not self.path.exists():
            raise UserError(f"no results in {self.root} (runs.jsonl missing); run `stbench run` first")
        records = self.records()
        if not records:
            raise UserError(f"{self.path} holds no readable run records; check the --results folder")
        return records

    # -- condensed-set artifacts ------------------------------------------------------------------
    def artifact_path(self, key: str) -> Path:
        return self.artifacts / f"{key}.pt"

    def save_artifact(self, key: str, payload: dict) -> Path:
        return save_plain(self.artifact_path(key), payload)

    def load_artifact(self, key: str) -> dict | None:
        """The plain payload saved under ``key``, or None (missing or unreadable: recompute)."""
        return load_plain(self.artifact_path(key))


def claim_ttl() -> float:
    return float(os.environ.get("STBENCH_CLAIM_TTL", 300))


class ClaimKeeper:
    """Refreshes this process's claims in the background until closed (a killed process stops)."""

    def __init__(self, store: ResultStore):
        self.store, self.held, self._stop = store, set(), threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(claim_ttl() / 4):
            self.store.refresh_claims(list(self.held))

    def take(self, rid: str) -> bool:
        if self.store.claim(rid):
            self.held.add(rid)
            return True
        return False

    def release(self, rid: str) -> None:
        self.held.discard(rid)
        self.store.release(rid)

    def close(self) -> None:
        self._stop.set()
        for rid in list(self.held):
            self.release(rid)


def _owner_dead(path: Path) -> bool:
    """A claim made on this host by a process that no longer exists (no need to wait for expiry)."""
    try:
        owner = json.loads(path.read_text())
        if owner.get("host") != socket.gethostname():
            return False
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _take_away(path: Path, stale_after: float) -> None:
    """Remove a stale lock or claim so that only one of several racing takers succeeds.

    Renaming is atomic, so one taker gets the stale entry; a taker that finds it renamed a *fresh*
    one instead (another taker removed the stale entry and made its own in between) puts it back.
    """
    grave = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        path.rename(grave)
    except FileNotFoundError:
        return                   # another taker won
    if _age(grave) <= stale_after:
        try:
            if grave.is_dir():
                grave.rename(path) if not path.exists() else grave.rmdir()
            else:
                os.link(grave, path)
                grave.unlink()
        except OSError:
            pass
        return
    grave.rmdir() if grave.is_dir() else grave.unlink()


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written; a write that makes no progress is an error."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "no space left on device (short write)")
        view = view[written:]


def writable_dir(path: str | Path, flag: str) -> Path:
    """Refuse a ``path`` that cannot become a writable folder (without creating anything).

    The folder, or its nearest existing ancestor, must be a folder in which a probe file can be
    created (a permission check alone would pass for root on a read-only folder's mode bits).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; give a folder path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so the folder cannot be made; give another path")
    try:
        probe = existing / f".stbench-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UserError(f"{flag} {path} is not writable ({err.strerror or err}); choose a folder you can write") from None
    return path
