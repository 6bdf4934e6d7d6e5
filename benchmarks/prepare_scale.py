"""Peak memory of streamed preparation against the size of the dataset written.

Each size runs in a fresh Python process (so every peak is its own) that writes a dataset into a
temporary folder, which is deleted afterwards:

* ``--mode synthetic`` (default): ``write_synthetic`` writes synthetic-weather (50 x 50 grid, 4
  features) chunk by chunk, as ``stbench prepare NAME --synthetic synthetic-weather --size ...`` does;
* ``--mode from``: a float32 ``values.npy`` of that size is written first, then ``stbench prepare NAME
  --from values.npy`` streams it into the canonical folder (needs twice the disk).

It prints, per size: the data points (T x N x C), seconds, the baseline RSS after imports, the peak
RSS, and the peak growth as a share of the output array. Sizes double from 1/16 GB up to --max-gb
(default 8). Check the free disk first (``df -h /tmp``); run small with ``--max-gb 0.5``.

    python benchmarks/prepare_scale.py --max-gb 0.5
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

N_LAT = N_LON = 50
FEATURES = 4

_CHILD = r'''
import json, sys, time
import numpy as np
from stbench.data.stream import peak_rss_bytes
import stbench.data.catalog, stbench.data.formats, stbench.data.synthetic  # noqa: F401
mode, folder, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
n_lat, n_lon, features = (int(v) for v in sys.argv[4:7])
src = folder + "/values.npy"
base = peak_rss_bytes()
started = time.perf_counter()
if mode == "synthetic":
    from stbench.data.synthetic import write_synthetic
    write_synthetic("synthetic-weather", "scale", folder, n_lat=n_lat, n_lon=n_lon, steps=steps,
                    features=features)
else:
    from stbench.data.catalog import prepare_from
    prepare_from("scale", src, folder, mask_zeros="no", freq="1h")
print(json.dumps({"base": base, "peak": peak_rss_bytes(), "seconds": time.perf_counter() - started}))
'''

_INPUT = r'''
import sys
import numpy as np
path, steps, n, features = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
header = {"descr": "<f4", "fortran_order": False, "shape": (steps, n, features)}
rng = np.random.default_rng(0)
with open(path, "wb") as fh:           # plain writes: the input's pages never count in a process's RSS
    np.lib.format.write_array_header_1_0(fh, header)
    for start in range(0, steps, 4096):
        rows = min(steps, start + 4096) - start
        fh.write(rng.uniform(1, 2, (rows, n, features)).astype(np.float32).tobytes())
'''


def run(mode: str, gb: float, root: Path) -> dict:
    n = N_LAT * N_LON
    steps = max(2, int(gb * 1e9 / (4 * n * FEATURES)))
    folder = Path(tempfile.mkdtemp(prefix="stbench-scale-", dir=root))
    try:
        if mode == "from":
            subprocess.run([sys.executable, "-c", _INPUT, str(folder / "values.npy"), str(steps), str(n),
                            str(FEATURES)], check=True)
        proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(folder), str(steps), str(N_LAT),
                               str(N_LON), str(FEATURES)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {gb} GB failed:\n{proc.stderr[-2000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        data = folder / "scale" / "data.npy"
        out.update(steps=steps, points=steps * n * FEATURES, output=data.stat().st_size,
                   disk=sum(p.stat().st_size for p in (folder / "scale").iterdir()))
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-gb", type=float, default=8.0, help="largest dataset (GB of data.npy)")
    parser.add_argument("--min-gb", type=float, default=1 / 16)
    parser.add_argument("--mode", choices=["synthetic", "from"], default="synthetic")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the temporary datasets go")
    args = parser.parse_args()
    sizes, gb = [], args.min_gb
    while gb < args.max_gb * (1 - 1e-9):
        sizes.append(gb)
        gb *= 2
    sizes.append(args.max_gb)
    free = shutil.disk_usage(args.tmp).free
    need = args.max_gb * 1e9 * (2.3 if args.mode == "from" else 1.3)
    if need > free:
        raise SystemExit(f"{args.tmp} has {free / 1e9:.1f} GB free; --max-gb {args.max_gb} in mode {args.mode} "
                         f"needs about {need / 1e9:.1f} GB")
    print(f"mode {args.mode}: {N_LAT}x{N_LON} locations x {FEATURES} features, float32; temporary folders under "
          f"{args.tmp}")
    header = f"{'data.npy':>10} {'points':>14} {'steps':>9} {'seconds':>8} {'base RSS':>9} {'peak RSS':>9} " \
             f"{'growth':>9} {'growth/out':>10}"
    print(header)
    for gb in sizes:
        r = run(args.mode, gb, Path(args.tmp))
        growth = r["peak"] - r["base"]
        print(f"{r['output'] / 1e9:>8.3f}GB {r['points']:>14,} {r['steps']:>9,} {r['seconds']:>8.1f} "
              f"{r['base'] / 2**20:>7.0f}MB {r['peak'] / 2**20:>7.0f}MB {growth / 2**20:>7.0f}MB "
              f"{growth / r['output']:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
