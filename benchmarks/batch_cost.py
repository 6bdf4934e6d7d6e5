"""Time one training step and one evaluation forward of a model on a prepared dataset, to size a grid.

Uses the harness's own pieces (dataset loader, index-based windows, ``train_step``, models) on the
real training windows at the preset's batch size, and extrapolates a quick ``full`` run (30 epochs)
from the measured step. Timers are synchronised on CUDA; the first step is a warm-up and not counted.

    python benchmarks/batch_cost.py --dataset era5-uk-t2m --model mtgnn [--batch-size 64] [--steps 2]
"""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default="mtgnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from stbench.data.catalog import load_dataset
    from stbench.data.windows import Series, WindowSpec
    from stbench.measure import Meter, setup_process
    from stbench.plugins import load_builtin
    from stbench.registry import MODELS
    from stbench.sources import RealSource
    from stbench.train import TrainConfig, train_step

    load_builtin()
    setup_process()
    device = torch.device(args.device)
    series = Series(load_dataset(args.dataset), WindowSpec(), device)
    train = series.split("train")
    torch.manual_seed(0)
    model = MODELS.get(args.model)(series.num_locations, series.num_channels, len(series.data.targets)).to(device)
    source, meter = RealSource(train), Meter(device)
    cfg = TrainConfig(batch_size=args.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ids = np.random.default_rng(0).permutation(len(train))[:args.batch_size]
    times = []
    for _ in range(args.steps + 1):
        start = meter.clock()
        train_step(model, opt, source, ids, None, cfg, torch.Generator().manual_seed(0))
        times.append(meter.clock() - start)
    step_s = float(np.mean(times[1:]))
    model.eval()
    with torch.no_grad():
        x, _, _ = source.batch(ids)
        start = meter.clock()
        model(x, source.loc_input)
        forward_s = meter.clock() - start
    batches = math.ceil(len(train) / args.batch_size)
    print(json.dumps({
        "dataset": args.dataset, "shape": list(series.data.shape), "model": args.model, "device": device.type,
        "threads": torch.get_num_threads(), "batch_size": args.batch_size, "train_windows": len(train),
        "train_step_s": step_s, "eval_forward_s": forward_s, "batches_per_epoch": batches,
        "epoch_s_estimate": step_s * batches, f"train_{args.epochs}_epochs_h_estimate": step_s * batches * args.epochs / 3600,
    }, indent=1))


if __name__ == "__main__":
    main()
