#!/usr/bin/env bash
# The GPU checks of issue 11, in one command, for a machine with a CUDA GPU (a few minutes):
#   1. the CUDA tests (the tests that skip without a GPU, and the device tests around them);
#   2. training: teacher epoch videos/s, serial student epoch with the teacher's outputs cached and live
#      (benchmarks/gpu_training.py, demo-sized store);
#   3. inference at the paper's sizes: FLOPs, latency, throughput, store -> scores end to end, k=10/30 vs the
#      teacher, fp32 and bf16 (benchmarks/bench_inference.py --paper-sizes).
# Results go to $OUT (default benchmarks/results/gpu/): JSON files, the tests' JUnit XML, nvidia-smi's report.
# Run from the repository root with the project's venv active:  OUT=/some/dir benchmarks/gpu.sh
# Not yet run: no GPU was lent to the session that wrote it (benchmarks/README.md says so).
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: error: CUDA is not available on this machine (torch.cuda.is_available() is False)" >&2
    exit 2
fi
nvidia-smi -q > "$OUT/nvidia-smi.txt" 2>&1 || true
status=0
"$PYTHON" -m pytest tests/test_training.py tests/test_families.py tests/test_benchmark.py tests/test_evaluation.py \
    tests/test_loader.py -q -k "cuda or gpu or device" --junitxml="$OUT/cuda_tests.xml" || status=$?
"$PYTHON" benchmarks/gpu_training.py --device cuda --out "$OUT/training_cuda.json" || status=$?
"$PYTHON" benchmarks/bench_inference.py --device cuda --paper-sizes --rounds 3 --out "$OUT/inference_cuda.json" || status=$?
"$PYTHON" benchmarks/bench_inference.py --device cuda --paper-sizes --precision bf16 --rounds 3 \
    --out "$OUT/inference_cuda_bf16.json" || status=$?
ls -l "$OUT"
exit "$status"
