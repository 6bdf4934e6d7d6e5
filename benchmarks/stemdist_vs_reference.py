"""STemDist side by side with its authors' public code on LOS-LOOP at 0.5% (issue 34).

    STBENCH_SHARED_DATA=... python benchmarks/stemdist_vs_reference.py REF_DIR [--rounds 2]

REF_DIR is a scratch copy of https://github.com/kbrother/STemDist outside this repository (it is
never vendored). The script copies it into a work folder and makes the two edits the reference needs
on a CPU-only machine: the hard-coded ``cuda`` device becomes ``cpu`` (the line the authors left
commented out below it), and ``torch.set_num_threads(4)`` is held at ``--threads`` (on 2 cores the
shipped 4 threads oversubscribe the CPU about 7x). Nothing else of the reference is changed.

Both sides get the same data (LOS-LOOP, the reference's npz recipe for its ``util.load_dataset``:
stride-1 windows 12 -> 12, split 60/20/20 over windows) and the reference constants: T_distill 20,
T_model 10, batch 256, K 4, M_S 10%, N_S 5%, seed 0. They run alternately, one process at a time,
``--rounds`` times each. Printed per side: seconds per outer iteration (the median over every
iteration after each run's first), seconds per full-location test pass (median), the process's peak
RSS (median over runs), and stbench's speed-up over the reference.

Timing points: the reference prints ``epoch: i, grad loss`` after each outer iteration; an
iteration's time is the gap between consecutive such lines (the first from the end of its initial
check). A test pass is a call of its ``gtnet.test_model`` on the test loader (its initial check
trains three models on the initial set and tests each). stbench reports both itself: the record's
``condense_info.outer_iteration_s`` and its ``evaluate`` phase (one test pass over every test window
and location, after one training epoch on the set).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CPU_EDIT = ('torch.device(f"cuda:{args.device}")', 'torch.device("cpu")')
REF_CONSTANTS = ["-lrf", "1e-3", "-lrs", "1e-3", "-srr", "0.1", "-nrr", "0.05", "-b", "256",
                 "-ned", "32", "-s", "0", "-c", "1000"]
# the reference's imports that stbench does not need (fast_pytorch_kmeans imports psutil)
REF_MODULES = ("fast_pytorch_kmeans", "psutil", "tqdm", "pandas")
STBENCH_CONSTANTS = ["--set", "distill_iterations=20", "--set", "model_epochs=10", "--set", "batch_size=256"]


# --- inputs ----------------------------------------------------------------------------------

def reference_npz(shared: Path, out: Path) -> int:
    """LOS-LOOP as the reference's train/val/test.npz (keys x, y; (M, 12, N, 1) raw mph); returns
    the number of test windows."""
    import pandas as pd

    values = pd.read_csv(shared / "LOS-LOOP" / "los_speed.csv").to_numpy(np.float32)[..., None]
    starts = np.arange(len(values) - 24 + 1)
    x = np.stack([values[s:s + 12] for s in starts])
    y = np.stack([values[s + 12:s + 24] for s in starts])
    n_test, n_train = round(0.2 * len(starts)), round(0.6 * len(starts))
    bounds = {"train": (0, n_train), "val": (n_train, len(starts) - n_test), "test": (len(starts) - n_test, len(starts))}
    out.mkdir(parents=True, exist_ok=True)
    for split, (lo, hi) in bounds.items():
        np.savez_compressed(out / f"{split}.npz", x=x[lo:hi], y=y[lo:hi])
    return n_test


def reference_copy(ref_dir: Path, out: Path) -> Path:
    """A copy of the reference with the CPU device edit (``CPU_EDIT``) in ``stemdist.py``."""
    if not (ref_dir / "stemdist.py").is_file():
        sys.exit(f"error: {ref_dir} has no stemdist.py; pass a copy of github.com/kbrother/STemDist")
    shutil.copytree(ref_dir, out, ignore=shutil.ignore_patterns(".git", "results"))
    script = out / "stemdist.py"
    text = script.read_text()
    if CPU_EDIT[0] not in text:
        sys.exit(f"error: {script} has no line {CPU_EDIT[0]!r} to point at the CPU; "
                 "is REF_DIR the authors' code at commit 2c94767?")
    script.write_text(text.replace(CPU_EDIT[0], CPU_EDIT[1], 1))
    (out / "results").mkdir()
    return out


# --- the two children ------------------------------------------------------------------------

def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def run_reference_child(ref: Path, data: Path, outer: int, threads: int, n_test: int) -> dict:
    """Inside the child: run the reference's stemdist.py as __main__, timing its printed iterations
    and its test passes."""
    import runpy

    import torch

    torch.set_num_threads(threads)
    torch.set_num_threads = lambda n: None   # the script's own set_num_threads(4) is held at ``threads``
    os.chdir(ref)
    sys.path.insert(0, str(ref))
    from model.mtgnn import gtnet

    passes, marks = [], []
    test_model = gtnet.test_model

    def timed_test_model(self, dataloader, *args, **kwargs):
        start = time.perf_counter()
        out = test_model(self, dataloader, *args, **kwargs)
        if dataloader.size == n_test:
            passes.append(time.perf_counter() - start)
        return out

    gtnet.test_model = timed_test_model

    class Marks:   # stdout that keeps the time of the lines that end an initial check or an iteration
        def write(self, text):
            if text.startswith(("initial,", "epoch: ")):
                marks.append(time.perf_counter())
            return len(text)

        def flush(self):
            pass

    sys.argv = ["stemdist.py", "-de", "0", "-d", str(data), "-e", str(outer), "-sp", "results/bench",
                *REF_CONSTANTS]
    stdout, sys.stdout = sys.stdout, Marks()
    try:
        runpy.run_path("stemdist.py", run_name="__main__")
    finally:
        sys.stdout = stdout
    iterations = np.diff(marks[2:]).tolist()   # marks: three initial checks, then one per iteration
    return {"outer_s": iterations, "test_pass_s": passes, "peak_rss_mb": peak_rss_mb()}


def run_stbench_child(store: Path, data_dir: Path, outer: int, threads: int) -> dict:
    """Inside the child: one stemdist cell through the CLI, its record read back from the store."""
    from stbench.cli import main

    code = main(["run", "--methods", "stemdist", "--dataset", "los-loop", "--budgets", "0.005", "--seeds", "0",
                 "--set", f"outer_iterations={outer}", *STBENCH_CONSTANTS, "--epochs", "1", "--model", "mtgnn-le",
                 "--data-dir", str(data_dir), "--results", str(store), "--quiet"])
    if code:
        sys.exit(code)
    record = json.loads((store / "runs.jsonl").read_text().splitlines()[-1])
    return {"outer_s": record["condense_info"]["outer_iteration_s"],
            "test_pass_s": [record["time_s"]["evaluate"]], "test_windows": record["split_windows"]["test"],
            "peak_rss_mb": peak_rss_mb()}


def child(kind: str, args: list[str], threads: int) -> dict:
    """One child process on ``threads`` cores (stbench uses one thread per usable core)."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", kind, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))
    if proc.returncode:
        sys.exit(f"error: the {kind} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- driver ----------------------------------------------------------------------------------

def summary(runs: list[dict], test_windows: int) -> dict:
    later = [s for run in runs for s in run["outer_s"][1:]] or [s for run in runs for s in run["outer_s"]]
    test_pass = statistics.median(s for run in runs for s in run["test_pass_s"])
    return {"outer_s": statistics.median(later), "test_pass_s": test_pass,
            "test_window_ms": 1e3 * test_pass / test_windows,
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ref_dir", type=Path, help="scratch copy of the authors' STemDist code")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    ap.add_argument("--outer", type=int, default=3, help="outer iterations per run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    shared = os.environ.get("STBENCH_SHARED_DATA")
    if not shared or not (Path(shared) / "LOS-LOOP" / "los_speed.csv").is_file():
        sys.exit("error: set STBENCH_SHARED_DATA to the folder holding LOS-LOOP/los_speed.csv")
    missing = [name for name in REF_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"error: the reference needs {', '.join(missing)}: pip install {' '.join(missing)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="stemdist-vs-ref-"))
    n_test = reference_npz(Path(shared), work / "ref-data")
    ref = reference_copy(args.ref_dir.resolve(), work / "ref")
    subprocess.run([sys.executable, "-m", "stbench.cli", "prepare", "los-loop", "--source",
                    str(Path(shared) / "LOS-LOOP"), "--data-dir", str(work / "data")], check=True,
                   stdout=subprocess.DEVNULL)
    runs = {"reference": [], "stbench": []}
    for r in range(args.rounds):
        runs["reference"].append(child("reference", [str(ref), str(work / "ref-data"), str(args.outer),
                                                     str(args.threads), str(n_test)], args.threads))
        runs["stbench"].append(child("stbench", [str(work / f"store-{r}"), str(work / "data"), str(args.outer),
                                                 str(args.threads)], args.threads))
        print(f"round {r + 1}/{args.rounds}: reference {runs['reference'][-1]['outer_s']}, "
              f"stbench {runs['stbench'][-1]['outer_s']}", file=sys.stderr)
    ours_windows = runs["stbench"][0]["test_windows"]
    ref_s, ours = summary(runs["reference"], n_test), summary(runs["stbench"], ours_windows)
    print(f"{'':22s}{'reference':>12s}{'stbench':>12s}{'ratio':>8s}")
    for key, label in [("outer_s", "s / outer iteration"), ("test_pass_s", "s / test pass"),
                       ("test_window_ms", "ms / test window"), ("peak_rss_mb", "peak RSS MiB")]:
        print(f"{label:22s}{ref_s[key]:12.2f}{ours[key]:12.2f}{ref_s[key] / ours[key]:7.2f}x")
    print(f"(LOS-LOOP 0.5%, {args.threads} threads, {args.rounds} alternating runs of {args.outer} outer "
          f"iterations; test windows: reference {n_test}, stbench {ours_windows}: stbench's split drops the "
          "windows that cross a split boundary)")
    if args.json:
        args.json.write_text(json.dumps({"reference": runs["reference"], "stbench": runs["stbench"],
                                         "summary": {"reference": ref_s, "stbench": ours}}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "reference":
            result = run_reference_child(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]), int(rest[4]))
        else:
            result = run_stbench_child(Path(rest[0]), Path(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(result))
    else:
        main()
