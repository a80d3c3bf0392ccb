#!/usr/bin/env bash
# The device check for a machine with a CUDA GPU, as one script (run from the repository root):
#   bash experiments/gpu_check.sh            # results under $OUT (default: ./gpu_check_out)
# 1. the GPU tests (pytest -m gpu): batched CUDA training equals CPU training; compiled step smoke test
# 2. `ttb bench train --json` for K = 1, 8, 32, 64 (loop vs batched, FLOP/s, fraction of peak)
# Each part writes its own files, so a failure in one still leaves the others' results.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then PY="${PYTHON:-.venv/bin/python}"; else PY="${PYTHON:-python3}"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # works without `pip install -e .`

{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA')"; } > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

timeout 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/pytest_gpu.txt"
echo "pytest -m gpu exit status: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest_gpu.txt"

timeout 240 "$PY" -m experiments.commands.main bench train --json --ks 1,8,32,64 --steps 20 \
  > "$OUT/bench_train.json" 2> "$OUT/bench_train.err"
echo "bench exit status: $?" | tee -a "$OUT/bench_train.err"
"$PY" -c "import json, sys; from experiments import train_bench as b; \
print(b.format_table(json.load(open(sys.argv[1]))))" "$OUT/bench_train.json" | tee "$OUT/bench_train.txt"
