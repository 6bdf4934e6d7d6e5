"""Peak RSS of one training epoch on a synthetic dataset of at least 1 GB raw.

Step 1 (a child process) generates ``synthetic-weather`` at the requested size and saves it in the
canonical folder format. Step 2 (this process, started fresh) opens it the way ``stbench run`` does,
builds the index-based windows, and trains one epoch through the one trainer (validation and test
passes included), then reports the process's peak RSS against the raw array size. Windows are never
materialised, so the peak should stay well under twice the raw size.

    python benchmarks/memory_epoch.py [--n-lat 50 --n-lon 50 --steps 27000 --features 4] [--model mlp]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def generate(folder: Path, args) -> None:
    from stbench.data.synthetic import synthetic_weather
    data = synthetic_weather(seed=0, n_lat=args.n_lat, n_lon=args.n_lon, steps=args.steps, features=args.features)
    data.save(folder)


def measure(folder: Path, args) -> dict:
    import numpy as np
    import torch

    from stbench.data.core import STData
    from stbench.data.windows import Series, WindowSpec
    from stbench.measure import Meter, rss_peak_bytes, setup_process
    from stbench.plugins import load_builtin
    from stbench.protocols import RunContext
    from stbench.registry import MODELS
    from stbench.sources import FixedSchedule, RealSource
    from stbench.train import TrainConfig, fit

    load_builtin()
    setup_process()
    baseline = rss_peak_bytes()
    data = STData.load(folder)
    raw = data.values.nbytes
    meter = Meter()
    with meter.phase("prepare"):
        series = Series(data, WindowSpec())
        train, val, test = (series.split(s) for s in ("train", "val", "test"))
        eval_loc_input = train.location_input()
    model = MODELS.get(args.model)(series.num_locations, series.num_channels, 1)
    ctx = RunContext(seed=0, device=torch.device("cpu"), rng=np.random.default_rng(0),
                     torch_generator=torch.Generator().manual_seed(0), meter=meter, preset="bench",
                     series=series, model_factory=lambda n: model)
    source = RealSource(train)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, eval_batch_size=args.batch_size, eval_every=1)
    result = fit(model, source, FixedSchedule(len(source)), cfg, val, test, eval_loc_input, ctx)
    return {
        "raw_bytes": raw, "shape": list(data.shape), "model": args.model, "batch_size": args.batch_size,
        "baseline_rss_bytes": baseline, "peak_rss_train_phase_bytes": meter.rss_peak["train"],
        "peak_rss_process_bytes": rss_peak_bytes(), "epoch_s": result.epoch_times[0],
        "train_windows": len(train),
        "peak_over_raw": rss_peak_bytes() / raw, "train_phase_peak_over_raw": meter.rss_peak["train"] / raw,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-lat", type=int, default=50)
    parser.add_argument("--n-lon", type=int, default=50)
    parser.add_argument("--steps", type=int, default=27000)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--folder", default=None, help="reuse or keep the generated dataset here")
    parser.add_argument("--stage", choices=["all", "generate", "measure"], default="all")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="stbench-mem-")) / "synthetic-weather-big"
    if args.stage == "generate":
        generate(folder, args)
        return
    if args.stage == "all" and not (folder / "meta.json").exists():
        subprocess.run([sys.executable, __file__, "--stage", "generate", "--folder", str(folder.parent),
                        "--n-lat", str(args.n_lat), "--n-lon", str(args.n_lon), "--steps", str(args.steps),
                        "--features", str(args.features)], check=True)
    if args.stage == "all":  # measure in a fresh process so generation memory does not count
        out = subprocess.run([sys.executable, __file__, "--stage", "measure", "--folder", str(folder.parent),
                              "--model", args.model, "--batch-size", str(args.batch_size)],
                             check=True, capture_output=True, text=True)
        print(out.stdout.strip())
        return
    print(json.dumps(measure(folder, args), indent=2))


if __name__ == "__main__":
    main()
