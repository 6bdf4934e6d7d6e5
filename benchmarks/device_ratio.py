"""Per method: status, time and peak CUDA memory of a GPU store's cells, and the time ratio to the same
cell (dataset, method, budget, seed, model) in a CPU store where it has one.

``python benchmarks/device_ratio.py GPU_RESULTS [CPU_RESULTS]``
"""
from __future__ import annotations

import sys

from tabulate import tabulate

from stbench.results import ResultStore


def cell(record: dict) -> tuple:
    return record["dataset"], record["method"], record["budget_label"], record["seed"], record["model"]


def main(gpu_dir: str, cpu_dir: str | None = None) -> None:
    cpu = {cell(r): r for r in ResultStore(cpu_dir).records()} if cpu_dir else {}
    rows = []
    for r in sorted(ResultStore(gpu_dir).records(), key=lambda r: (r["method"], r["budget_label"])):
        total = r["time_s"].get("total", 0.0)
        peak = max((r.get("peak_cuda_bytes") or {}).values(), default=0)
        twin = cpu.get(cell(r))
        ratio = twin["time_s"]["total"] / total if twin and twin["status"] == "ok" and total > 0 else None
        rows.append([r["method"], r["budget_label"], r["status"], f"{total:.1f}",
                     f"{peak / 2 ** 20:.0f}", "-" if ratio is None else f"{ratio:.1f}x",
                     (r.get("error") or "")[:60]])
    print(tabulate(rows, headers=["method", "budget", "status", "total s", "peak CUDA MiB", "CPU/GPU time",
                                  "error"]))


if __name__ == "__main__":
    main(*sys.argv[1:3])
