#!/usr/bin/env bash
# The first thing to run on a machine with NVIDIA GPUs (CUDA paths are not exercised by CI):
#   1. the CUDA tests: python -m pytest -m gpu
#   2. a smoke grid of every registered method on CUDA, one worker process per GPU, and per method its
#      status, time, peak CUDA memory and the time ratio to the same cell in the committed CPU store
#      benchmarks/stores/smoke-cpu (made with the same command and --device cpu --executor serial).
#   3. one full-location test pass at 2,000 locations per evaluation batch: fixed 64 windows and the
#      --eval-memory budgets (seconds, peak CUDA MiB, the batch each budget chose).
# Budget: under 10 minutes on one GPU. Usage: bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/stbench-gpu-check}}"
mkdir -p "$out"
ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
if [ "$ngpu" -lt 1 ]; then echo "gpu_check: nvidia-smi sees no GPU"; exit 2; fi
gpus=$(seq -s, 0 $((ngpu - 1)))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"

echo "== python -m pytest -m gpu"
timeout 240 python -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tail -15
tests_rc=${PIPESTATUS[0]}

echo "== smoke grid of every method on CUDA ($ngpu worker(s))"
start=$(date +%s)
timeout 300 stbench run --methods all --dataset synthetic-traffic --size locations=64,steps=1200 \
  --budgets 0.02 --retention 0.3 --preset smoke --device cuda --executor process --workers "$ngpu" \
  --gpus "$gpus" --cell-timeout 120 --results "$out/cuda" --quiet > "$out/cuda-table.txt"
grid_rc=$?
echo "grid: exit $grid_rc in $(( $(date +%s) - start )) s"
python benchmarks/device_ratio.py "$out/cuda" benchmarks/stores/smoke-cpu
echo "== test pass per evaluation batch on CUDA (2,000 locations)"
timeout 60 python benchmarks/eval_pass.py --dataset synthetic-traffic --size locations=2000,steps=2000 \
  --model mtgnn-le --device cuda --settings 64,mem:1024,mem:8192
echo "gpu_check: pytest exit $tests_rc, grid exit $grid_rc"
[ "$tests_rc" -eq 0 ] && [ "$grid_rc" -eq 0 ]
