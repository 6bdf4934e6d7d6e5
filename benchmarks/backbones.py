"""Parameters, seconds per training epoch and peak RSS of every evaluation backbone on one dataset.

For each model a fresh process (so one model's heap does not count against the next) loads the
dataset as ``stbench run`` does, builds the model as the runner does (the dataset's adjacency for a
model with ``uses_adjacency``), trains one epoch on all training windows and all locations (full
data) through the harness's ``train_step`` at the given batch size, and reports the epoch's wall time
and the process's peak RSS during it (``Meter`` phase "train"). With ``--artifact`` (a condensed set a
results store saved, ``RESULTS/artifacts/KEY.pt``) it trains on that set instead, as the runner does:
its locations, location weights and training hints (batch size, location subsets K). The first ``--warmup`` batches run
before the timed epoch and are not counted. ``--max-batches`` times only that many batches and
scales the time to a whole epoch (marked ``extrapolated``). Transductive and inductive forms run alike.

    python benchmarks/backbones.py --dataset synthetic-traffic --size locations=2000,steps=2000
    python benchmarks/backbones.py --dataset era5-uk-t2m --models stgcn,agcrn-le --batch-size 64 --json
    python benchmarks/backbones.py --dataset los-loop --models stgcn-le,stnorm \
        --artifact benchmarks/stores/los-loop-backbones/artifacts/KEY.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

DEFAULT_MODELS = ("mtgnn,mtgnn-le,gwnet,stgcn,stgcn-le,stgcn-adj,agcrn,agcrn-le,fouriergnn,stnorm,"
                  "stid,stid-le,staeformer,staeformer-le")


def _knobs(text: str | None) -> dict:
    from stbench.cli import _pairs
    return _pairs([text] if text else [], "--size")


def measure(args) -> dict:
    """One model, in this process."""
    import numpy as np
    import torch

    from stbench.data.catalog import load_dataset
    from stbench.data.windows import Series, WindowSpec
    from stbench.measure import Meter, setup_process
    from stbench.models.graph import predefined_graph
    from stbench.plugins import load_builtin
    from stbench.registry import MODELS
    from stbench.protocols import CondensedSet
    from stbench.safe_io import load_plain
    from stbench.sources import RealSource, source_for
    from stbench.train import TrainConfig, train_step

    load_builtin()
    setup_process(args.threads)
    device = torch.device(args.device)
    series = Series(load_dataset(args.dataset, args.data_dir, **_knobs(args.size)), WindowSpec(), device)
    train = series.split("train")
    cls = MODELS.get(args.only)
    extra = {}
    graph, _ = predefined_graph(series.data.adj, series.data.coords)
    if getattr(cls, "uses_adjacency", False) and graph is not None:   # as the runner builds it
        extra["adjacency"] = graph
    source, cfg = RealSource(train), TrainConfig(batch_size=args.batch_size)
    num_locations = series.num_locations
    if args.artifact:
        condensed = CondensedSet.from_state(load_plain(args.artifact)["set"], train)
        source = source_for(condensed, train)
        hints = {k: v for k, v in condensed.hints.items() if k in {"batch_size", "location_subsets"}}
        cfg = dataclasses.replace(cfg, **hints)
        num_locations = condensed.shape(train)[1]
        extra = extra if num_locations == series.num_locations else {}
    torch.manual_seed(0)
    model = cls(num_locations, series.num_channels, len(series.data.targets), **extra).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(len(source))
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    for ids in batches[:args.warmup]:
        train_step(model, opt, source, ids, None, cfg, gen)
    timed = batches if args.max_batches is None else batches[:args.max_batches]
    meter = Meter(device)
    with meter.phase("train"):
        for ids in timed:
            train_step(model, opt, source, ids, None, cfg, gen)
    epoch_s = meter.time_s["train"] * len(batches) / len(timed)
    return {
        "model": args.only, "dataset": args.dataset, "shape": list(series.data.shape),
        "parameters": sum(p.numel() for p in model.parameters()), "batch_size": cfg.batch_size,
        "training_set": args.artifact or "full", "locations": num_locations, "location_subsets": cfg.location_subsets,
        "batches_per_epoch": len(batches), "timed_batches": len(timed), "extrapolated": len(timed) < len(batches),
        "epoch_s": epoch_s, "peak_rss_bytes": meter.rss_peak["train"], "rss_peak_is_process": meter.rss_peak_is_process,
        "peak_cuda_bytes": meter.cuda_peak.get("train"), "adjacency": bool(extra), "device": str(device),
        "threads": torch.get_num_threads(),
    }


def _child_args(args, model: str) -> list[str]:
    out = [sys.executable, __file__, "--only", model, "--dataset", args.dataset, "--batch-size", str(args.batch_size),
           "--device", args.device, "--warmup", str(args.warmup)]
    for flag, value in (("--size", args.size), ("--data-dir", args.data_dir), ("--max-batches", args.max_batches),
                        ("--threads", args.threads), ("--artifact", args.artifact)):
        if value is not None:
            out += [flag, str(value)]
    return out


def _row(r: dict) -> str:
    if "error" in r:
        return f"{r['model']:<15} {'':>10} {'':>10} {'':>10}  {r['error']}"
    note = " (extrapolated)" if r["extrapolated"] else ""
    return (f"{r['model']:<15} {r['parameters']:>10,} {r['epoch_s']:>10.2f} "
            f"{r['peak_rss_bytes'] / 2**30:>10.2f}{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic-traffic")
    parser.add_argument("--size", default=None, help="size knobs of a built-in dataset, e.g. locations=2000,steps=2000")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated registry names")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per usable core)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches before the epoch")
    parser.add_argument("--max-batches", type=int, default=None, help="time this many batches, scale to an epoch")
    parser.add_argument("--artifact", default=None, help="train on this stored condensed set instead of full data")
    parser.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)   # child process: one model
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args)))
        return
    if not args.json:
        print(f"{'model':<15} {'parameters':>10} {'epoch s':>10} {'peak GiB':>10}   "
              f"({args.dataset} {args.size or ''}, batch {args.batch_size}, {args.device})")
    for model in filter(None, (m.strip() for m in args.models.split(","))):
        done = subprocess.run(_child_args(args, model), capture_output=True, text=True, check=False)
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines:
            record = json.loads(lines[-1])
        else:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            record = {"model": model, "error": f"exit {done.returncode}: {tail}"}
        print(json.dumps(record) if args.json else _row(record), flush=True)


if __name__ == "__main__":
    main()
