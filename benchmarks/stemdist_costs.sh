#!/usr/bin/env bash
# STemDist cost measurements (issue 3). Runs one stbench process at a time: on 2 cores, concurrent
# torch processes oversubscribe the CPU and every timing becomes meaningless.
#   STBENCH_DATA=... bash benchmarks/stemdist_costs.sh OUT_DIR [parts...]
# parts: outer (time per outer iteration, reference constants), train (training cost of the STemDist set
# vs a temporal-only set at >= 2,000 locations), scale (condensation time as M_T, N_T, F double).
set -euo pipefail
out=${1:?usage: stemdist_costs.sh OUT_DIR [outer] [train] [scale]}; shift
parts=${*:-outer train scale}
mkdir -p "$out"
ref="--set distill_iterations=20 --set model_epochs=10 --set batch_size=256"

for part in $parts; do case $part in
outer)  # Figure 6/7: seconds per outer iteration on LOS-LOOP at 0.5%, the reference's constants
  stbench run --methods stemdist,stemdist-wo-g,stemdist-wo-gc --dataset los-loop --budgets 0.005 \
    --set outer_iterations=2 $ref --epochs 1 --results "$out/outer" --quiet ;;
train)  # Figure 4: one epoch on the STemDist set (10% x 5%) vs 0.5% of the windows with all locations
  size="--size n_lat=45,n_lon=45,steps=1440,features=2"
  stbench run --methods stemdist --dataset synthetic-weather $size --budgets 0.005 \
    --set outer_iterations=1 --set distill_iterations=2 --set model_epochs=1 --preset quick --epochs 3 \
    --results "$out/train" --quiet
  stbench run --methods random --dataset synthetic-weather $size --budgets 0.005 --preset quick --epochs 3 \
    --results "$out/train" --quiet ;;
scale)  # Figure 5: one outer iteration (T_distill 5, T_model 2) as M_T, N_T and F double
  loops="--set outer_iterations=1 --set distill_iterations=5 --set model_epochs=2 --model mlp --epochs 1"
  for steps in 600 1200 2400 4800; do
    stbench run --methods stemdist --dataset synthetic-weather --size n_lat=20,n_lon=20,steps=$steps,features=2 \
      --budgets 0.005 $loops --results "$out/scale-m" --quiet; done
  for side in 16 23 32 45; do
    stbench run --methods stemdist --dataset synthetic-weather --size n_lat=$side,n_lon=$side,steps=1200,features=2 \
      --budgets 0.005 $loops --results "$out/scale-n" --quiet; done
  for f in 1 2 4 8; do
    stbench run --methods stemdist --dataset synthetic-weather --size n_lat=20,n_lon=20,steps=1200,features=$f \
      --budgets 0.005 $loops --results "$out/scale-f" --quiet; done ;;
*) echo "unknown part $part" >&2; exit 2 ;;
esac; done
