#!/usr/bin/env bash
# The device check for a machine with one CUDA GPU (an H100 / H200), as one script, under 8 minutes:
#   bash experiments/gpu_check.sh            # results under $OUT (default: ./gpu_check_out)
# 1. the GPU tests (pytest -m gpu): CUDA training equals CPU training, compiled step, reference algorithms
# 2. `ttb bench train` on the GPU, float32, K = 1, 8, 64, against the plain PyTorch loop
# 3. the same with bfloat16 autocast, and the compute shape up to the largest K that fits:
#    model FLOP/s and the fraction of the card's bf16 peak
# Each part writes its own files and has its own time limit, so a failure leaves the others' results.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works without `pip install -e .`

{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

timeout 180 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/pytest_gpu.txt"
echo "pytest -m gpu exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest_gpu.txt"

bench() {  # name, then ttb bench train arguments
  local name=$1; shift
  timeout 120 "$PY" -m experiments.commands.main bench train --json --device cuda "$@" \
    > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "$name exit status: $?" | tee -a "$OUT/$name.err"
  "$PY" -c "import json, sys; from experiments.training import bench as b; \
print(b.format_table(json.load(open(sys.argv[1]))))" "$OUT/$name.json" | tee "$OUT/$name.txt"
}
bench bench_float32 --ks 1,8,64 --steps 10
bench bench_bf16 --ks 1,8,64 --steps 10 --autocast bfloat16
bench bench_bf16_large --shapes compute,gpt2_small --ks 256,1024,4096 --steps 5 --autocast bfloat16
