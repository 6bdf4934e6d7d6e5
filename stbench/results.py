"""The results store: one JSON line per run in ``runs.jsonl``, append-only and safe against a kill.

Each record is written with a single ``write`` of one line followed by ``fsync``. A process killed
mid-write can leave at most one partial last line; readers skip it and the next append starts on a
fresh line. A re-run skips every run_id already finished (``ok``, ``oom``, ``incompatible``); a
``failed`` run is retried and its newer record supersedes the old one. Condensed sets are kept under
``artifacts/`` so a cell can be re-evaluated without condensing again.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

from stbench import UserError

FINISHED = ("ok", "oom", "incompatible")


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
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_clean(record), sort_keys=True, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self._ends_mid_line():
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_mid_line(self) -> bool:
        size = self.path.stat().st_size
        if size == 0:
            return False
        with open(self.path, "rb") as fh:
            fh.seek(size - 1)
            return fh.read(1) != b"\n"

    def records(self) -> list[dict]:
        """Latest record per run_id, in first-seen order; partial or corrupt lines are skipped."""
        if not self.path.exists():
            return []
        latest: dict[str, dict] = {}
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "run_id" in record:
                    latest[record["run_id"]] = record
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
        path = self.artifact_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # atomic: a killed save never leaves a truncated artifact
        return path

    def load_artifact(self, key: str) -> dict | None:
        path = self.artifact_path(key)
        if not path.exists():
            return None
        try:
            return torch.load(path, weights_only=False)
        except Exception:  # a damaged artifact is recomputed, never trusted
            return None
