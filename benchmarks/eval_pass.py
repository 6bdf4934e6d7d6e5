"""Seconds and peak memory of one full-location test pass per evaluation batch (issue 34).

For each setting a fresh process (so one setting's heap does not count against the next) loads the
dataset as ``stbench run`` does, builds the model with seed 0, and scores the whole test split on every
location through the harness's ``evaluate``: once untimed (warm-up), then ``--repeats`` timed passes.
A setting is a fixed batch (``64``) or a memory budget in MiB (``mem:512``, as ``--eval-memory 512``,
whose probes are timed with the pass). Printed per setting: the batch used, the median seconds per pass,
the process's peak RSS during the timed passes (CPU) or the peak CUDA memory, and the test RMSE (equal
across settings up to float rounding: the same windows, grouped otherwise).

    STBENCH_DATA=DIR python benchmarks/eval_pass.py --dataset los-loop --model mtgnn-le \\
        --settings 64,256,mem:256,mem:1024
    python benchmarks/eval_pass.py --dataset synthetic-traffic --size locations=2000,steps=2000 --device cuda
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def measure(args) -> dict:
    import torch

    from stbench.cli import _pairs
    from stbench.data.catalog import load_dataset
    from stbench.data.windows import Series, WindowSpec
    from stbench.eval_batch import budget_batch
    from stbench.measure import Meter, setup_process
    from stbench.plugins import load_builtin
    from stbench.registry import MODELS
    from stbench.train import evaluate

    load_builtin()
    setup_process(args.threads)
    device = torch.device(args.device)
    series = Series(load_dataset(args.dataset, args.data_dir, **_pairs([args.size] if args.size else [], "--size")),
                    WindowSpec(), device)
    test = series.split("test")
    loc_input = test.location_input()
    torch.manual_seed(0)
    model = MODELS.get(args.model)(series.num_locations, series.num_channels, len(series.data.targets)).to(device)
    kind, _, value = args.setting.partition(":")

    def batch() -> int:
        return budget_batch(model, test, loc_input, float(value)) if kind == "mem" else int(kind)

    scores = evaluate(model, test, loc_input, batch())   # warm-up
    meter, times = Meter(device), []
    with meter.phase("evaluate"):
        for _ in range(args.repeats):
            start = meter.clock()
            size = batch()
            scores = evaluate(model, test, loc_input, size)
            times.append(meter.clock() - start)
    return {"setting": args.setting, "batch": size, "pass_s": statistics.median(times),
            "peak_rss_bytes": meter.rss_peak["evaluate"], "peak_cuda_bytes": meter.cuda_peak.get("evaluate"),
            "rmse": scores["rmse"], "test_windows": len(test), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="los-loop")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--size", default=None, help="size knobs of a built-in dataset, e.g. locations=2000,steps=2000")
    parser.add_argument("--model", default="mtgnn-le")
    parser.add_argument("--settings", default="64,256,mem:256,mem:1024",
                        help="comma-separated: a fixed batch (64) or a memory budget in MiB (mem:512)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--setting", default=None, help=argparse.SUPPRESS)   # child process: one setting
    args = parser.parse_args()
    if args.setting:
        print(json.dumps(measure(args)))
        return
    print(f"{'setting':<10} {'batch':>6} {'s/pass':>8} {'peak MiB':>9} {'test RMSE':>11}   "
          f"({args.dataset}, {args.model}, {args.device})")
    for setting in filter(None, (s.strip() for s in args.settings.split(","))):
        cmd = [sys.executable, __file__, "--setting", setting, "--dataset", args.dataset, "--model", args.model,
               "--repeats", str(args.repeats), "--device", args.device]
        for flag, value in (("--data-dir", args.data_dir), ("--size", args.size), ("--threads", args.threads)):
            if value is not None:
                cmd += [flag, str(value)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"{setting:<10} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        peak = r["peak_cuda_bytes"] if r["peak_cuda_bytes"] is not None else r["peak_rss_bytes"]
        print(f"{setting:<10} {r['batch']:>6} {r['pass_s']:>8.3f} {peak / 2**20:>9.0f} {r['rmse']:>11.6f}")


if __name__ == "__main__":
    main()
