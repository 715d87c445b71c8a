#!/usr/bin/env bash
# The CUDA benchmark as one prepared script: a few minutes on an H100 (run by hand).
#
#   bash bench/cuda.sh [RESULTS_DIR]
#
# Needs torch with CUDA, torchvision, pydantic, pyyaml, tensorboard and scikit-learn importable
# (the project's venv, or a GPU box's system Python with the missing wheels on PYTHONPATH).
# Writes engine_overhead_cuda*.json into RESULTS_DIR (default bench/results) for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS=${1:-bench/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('torch', torch.__version__)"
# ResNet-18 3x32x32, batch 512, bf16, channels_last, data on the GPU; digits MLP for the
# per-step overhead on a kernel-light workload. 100 steps x (5 rounds + warm-up) x 3 loops each.
"$PY" bench/engine_overhead.py --device cuda --steps 100 --repeats 5 --only resnet18 --json "$RESULTS/engine_overhead_cuda.json"
"$PY" bench/engine_overhead.py --device cuda --steps 400 --repeats 5 --only digits --json "$RESULTS/engine_overhead_cuda_digits.json"
# Both loops under torch.compile (inductor): the warm-up round pays the compilation.
"$PY" bench/engine_overhead.py --device cuda --steps 100 --repeats 3 --only resnet18 --compile --json "$RESULTS/engine_overhead_cuda_compiled.json"
# Many GPUs (skipped on one): the digits recipe's regularize stage with one worker per GPU
# against one, and one model on every GPU with torchrun (nccl) against one process.
GPUS=$(nvidia-smi -L | wc -l)
if [ "$GPUS" -gt 1 ]; then
    "$PY" bench/recipe.py --settings "--workers 1" "--workers $GPUS" --rounds 2 --json "$RESULTS/workers_cuda.json"
    for n in 1 "$GPUS"; do
        /usr/bin/time -f "overfit on $n GPU process(es): %e s" "$PY" -m nnrecipe.cli overfit --nproc "$n" \
            -c configs/mnist1d.yaml output_dir="$(mktemp -d)" >/dev/null || true
    done
fi
# K experiments trained as one (issue 24) against one by one, through the engine's whole path:
# the MNIST-1D CNN (goal: 5x the steps/s at K = 8) and the digits MLP.
"$PY" bench/together.py --device cuda --config configs/mnist1d.yaml --ks 2 8 --steps 400 --rounds 2 --json "$RESULTS/together_cuda_mnist1d.json"
"$PY" bench/together.py --device cuda --ks 2 8 --steps 400 --rounds 2 --json "$RESULTS/together_cuda_digits.json"
