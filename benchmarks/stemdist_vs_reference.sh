#!/usr/bin/env bash
# STemDist vs its authors' public code, side by side on LOS-LOOP at 0.5% (issue 34).
#   STBENCH_SHARED_DATA=... bash benchmarks/stemdist_vs_reference.sh REF_DIR [--rounds 2] [--outer 3]
# REF_DIR: a scratch copy of github.com/kbrother/STemDist outside this repository (never vendored);
# it is copied to a work folder and pointed at the CPU there. Needs the reference's own dependencies
# (fast_pytorch_kmeans, psutil, tqdm, pandas). Runs one torch process at a time, alternating the two.
set -euo pipefail
ref=${1:?usage: stemdist_vs_reference.sh REF_DIR [--rounds N] [--outer N] [--threads N] [--json FILE]}; shift
exec python "$(dirname "$0")/stemdist_vs_reference.py" "$ref" "$@"
