#!/usr/bin/env bash
# Every training-throughput figure on one GPU machine (H100 or H200), in one run:
# the seed-style loop against this project's training path, for the LSTM (hidden100), then
# the CNN (cnn100) and the MLP (mlp256), on 2,000,000 synthetic rows of the course's shape.
#
#   images/bench-gpu.sh                    # from the repository root, with PyTorch (CUDA) installed
#   ROWS=6100000 EPOCHS=10 images/bench-gpu.sh    # the full 10 epochs at the course's size
#   FAMILIES=lstm images/bench-gpu.sh      # the LSTM only (about 2 minutes on an H200)
#
# Needs only torch, numpy and scikit-learn: the bench imports no gensim, boto3, hera or prometheus-client.
# It prints the machine, then one table per family; keep the whole output with the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
ROWS=${ROWS:-2000000}
EPOCHS=${EPOCHS:-3}
FAMILIES=${FAMILIES:-lstm cnn mlp}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
for family in $FAMILIES; do
    "$PYTHON" -m job bench --device cuda --family "$family" --rows "$ROWS" --epochs "$EPOCHS"
done
