"""Console tables of the results store: one row per run, or mean +- std over seeds."""
from __future__ import annotations

import math
from collections import defaultdict

from tabulate import tabulate

METRICS = ("rel_mae", "rel_rmse", "mae", "rmse", "mape")


def _mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def _epoch_time(record: dict) -> float | None:
    times = record.get("epoch_time_s") or []
    return sum(times) / len(times) if times else None


def aggregate_rows(records: list[dict]) -> list[list]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["method"], r.get("budget_label", "-"), r["model"])].append(r)
    rows = []
    for (dataset, method, budget, model), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        statuses = sorted({r["status"] for r in runs if r["status"] != "ok"})
        row = [dataset, method, budget, model, f"{len(ok)}/{len(runs)}"]
        row += [_mean_std([r["metrics"]["test"].get(m) for r in ok]) for m in METRICS]
        achieved = [r.get("budget_achieved") for r in ok if r.get("budget_achieved") is not None]
        row.append(f"{100 * sum(achieved) / len(achieved):.3g}%" if achieved else "-")
        epoch = [t for t in map(_epoch_time, ok) if t]
        row.append(f"{sum(epoch) / len(epoch):.3f}" if epoch else "-")
        rss = [max((r.get("peak_rss_bytes") or {}).values(), default=0) for r in ok]
        row.append(f"{max(rss) / 2**20:.0f}" if rss else "-")
        row.append(", ".join(statuses) or "")
        rows.append(row)
    return rows


def aggregate_table(records: list[dict], fmt: str = "simple") -> str:
    headers = ["dataset", "method", "budget", "model", "ok/runs", *(f"test {m}" for m in METRICS),
               "achieved", "s/epoch", "peak RSS MiB", "other status"]
    return tabulate(aggregate_rows(records), headers=headers, tablefmt=fmt)


def runs_table(records: list[dict], fmt: str = "simple") -> str:
    headers = ["run_id", "dataset", "method", "budget", "seed", "model", "status", "rel_mae", "rel_rmse",
               "train s", "error"]
    rows = []
    for r in records:
        test = (r.get("metrics") or {}).get("test", {})
        rows.append([r["run_id"], r["dataset"], r["method"], r.get("budget_label"), r["seed"], r["model"],
                     r["status"], test.get("rel_mae"), test.get("rel_rmse"),
                     (r.get("time_s") or {}).get("train"), (r.get("error") or "")[:60]])
    return tabulate(rows, headers=headers, tablefmt=fmt, floatfmt=".4f")
