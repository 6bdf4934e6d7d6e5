"""Print the cost figures of stored runs: condensation (clustering, setup, per iteration of the method's
main loop: an outer iteration for gradient matching, an iteration for DM/IDM/MTT/DATM, a step for
Frepo), training per epoch with the share spent inside a pruner's schedule, and peak memory per phase.
``python benchmarks/summarise.py RESULTS_DIR [...]``."""
from __future__ import annotations

import sys

from tabulate import tabulate

from stbench.results import ResultStore


def row(r: dict) -> list:
    info = r.get("condense_info") or {}
    outer = info.get("outer_iteration_s") or info.get("iteration_s") or info.get("step_s") or []
    setup = info.get("teacher_s") or info.get("experts_build_s") or info.get("warmup_s")
    epochs = r.get("epoch_time_s") or []
    in_schedule = r.get("schedule_time_s") or []
    schedule_share = 100 * sum(in_schedule) / sum(epochs) if in_schedule and sum(epochs) > 0 else None
    rss = r.get("peak_rss_bytes") or {}
    test = (r.get("metrics") or {}).get("test", {})
    return [r["dataset"], "x".join(map(str, r["dataset_shape"])), r["method"], r.get("budget_label"), r["seed"],
            r["model"], r["status"], "x".join(map(str, r.get("reduced_shape") or [])),
            info.get("clustering_s"), setup, sum(outer) / len(outer) if outer else None,
            (r.get("time_s") or {}).get("condense"), sum(epochs) / len(epochs) if epochs else None, schedule_share,
            rss.get("condense", 0) / 2**20, rss.get("train", 0) / 2**20, test.get("rel_mae"), test.get("rel_rmse")]


HEADERS = ["dataset", "T x N x C", "method", "budget", "seed", "model", "status", "reduced", "cluster s",
           "setup s", "s/iter", "condense s", "s/epoch", "sched %", "RSS condense MiB", "RSS train MiB",
           "rel_mae", "rel_rmse"]

if __name__ == "__main__":
    rows = [row(r) for path in sys.argv[1:] for r in ResultStore(path).records()]
    print(tabulate(rows, headers=HEADERS, floatfmt=".4g"))
