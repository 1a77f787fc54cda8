#!/usr/bin/env bash
# Every training-throughput figure on one GPU machine (H100 or H200), in one run: the machine, the
# torch, CUDA and cuDNN it ran (and whether that torch is the pinned one the image ships), then, for the
# LSTM (hidden100), the CNN (cnn100) and the MLP (mlp256): the seed-style loop against this project's
# path and against that path at 4x the batch, in interleaved rounds over several seeds (medians,
# min..max, ratio of medians, mean accuracy and its spread, verdicts against the 10x target), peak GPU
# memory, the 10-epoch time extrapolated to the course's 6.1 M rows, meli_train_gpu_memory_bytes as
# train pushes it, and the profiler's table of a few of ours' steps. Each family also runs ours with
# CUDA graphs (train --cuda-graphs true), and first, where pytest is installed, the check that graphed
# steps train as eager ones do (tests/test_bench.py -k cuda_graphs). Last, K = 1, 2, 4 and 8 processes of
# hidden100 training at once on the one GPU, as runs_per_gpu trains them (job/share_bench.py): the
# aggregate samples/s and each process's, in one table, against the target (K=4 at least 3x one run).
#
#   images/bench-gpu.sh                          # from the repository root, with PyTorch (CUDA) installed
#   FAMILY=all images/bench-gpu.sh               # every family (lstm, cnn, mlp or all; default lstm)
#   SHARE=1,2,4 images/bench-gpu.sh              # other process counts for the last table
#   BENCH_ARGS="--rows 6119100 --epochs 10 --repeats 1 --seeds 1" images/bench-gpu.sh   # the course's size, once (no verdicts)
#
# The sizes are the bench's GPU defaults (job/bench.py and job/share_bench.py DEFAULTS). The LSTM alone
# fits in 8 minutes, start-up included: the LSTM and the CNN took about 2.5 minutes each on an H100, so
# FAMILY=all does not (docs/performance.md, "The GPU bench's default size").
# Needs torch, numpy, scikit-learn and prometheus-client (for the metric): no gensim, boto3 or hera.
# Keep the whole output with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
FAMILY=${FAMILY:-lstm}

date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" - "$(cat images/torch-version)" <<'EOF'
import sys

import torch

pinned = sys.argv[1]
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "pinned", pinned)
if torch.__version__.split("+")[0] != pinned:
    print(f"note: torch {torch.__version__} is not the shipped torch: the image and every test run {pinned} (images/torch-version)")
EOF
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_bench.py -k cuda_graphs \
        || echo "CUDA graphs check FAILED: keep cuda_graphs off; the bench goes on"
else
    echo "pytest not installed: the check that CUDA graphs train as eager steps do is left out"
fi
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
PYTHONUNBUFFERED=1 "$PYTHON" -m job bench --device cuda --family "$FAMILY" --profile ${BENCH_ARGS:-}
PYTHONUNBUFFERED=1 "$PYTHON" -m job bench --device cuda --share "${SHARE:-1,2,4,8}"
echo "bench-gpu.sh: ${SECONDS} s in all, start-up included"
