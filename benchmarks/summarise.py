"""Print the cost figures of stored runs: condensation (clustering, per outer iteration), training
per epoch, and peak memory per phase. ``python benchmarks/summarise.py RESULTS_DIR [...]``."""
from __future__ import annotations

import sys

from tabulate import tabulate

from stbench.results import ResultStore


def row(r: dict) -> list:
    info = r.get("condense_info") or {}
    outer = info.get("outer_iteration_s") or []
    epochs = r.get("epoch_time_s") or []
    rss = r.get("peak_rss_bytes") or {}
    test = (r.get("metrics") or {}).get("test", {})
    return [r["dataset"], "x".join(map(str, r["dataset_shape"])), r["method"], r.get("budget_label"), r["seed"],
            r["model"], r["status"], "x".join(map(str, r.get("reduced_shape") or [])),
            info.get("clustering_s"), sum(outer) / len(outer) if outer else None,
            (r.get("time_s") or {}).get("condense"), sum(epochs) / len(epochs) if epochs else None,
            rss.get("condense", 0) / 2**20, rss.get("train", 0) / 2**20, test.get("rel_mae"), test.get("rel_rmse")]


HEADERS = ["dataset", "T x N x C", "method", "budget", "seed", "model", "status", "reduced", "cluster s",
           "s/outer", "condense s", "s/epoch", "RSS condense MiB", "RSS train MiB", "rel_mae", "rel_rmse"]

if __name__ == "__main__":
    rows = [row(r) for path in sys.argv[1:] for r in ResultStore(path).records()]
    print(tabulate(rows, headers=HEADERS, floatfmt=".4g"))
