#!/usr/bin/env bash
# The GPU benchmark run: the ResNet-18 (CelebA-like, T = 40) and MLP (T = 2, 10, 40) step benchmarks
# against TorchJD on one accelerator, each capped in time, results written to $1 (default
# benchmarks/results). Needs jax with a GPU backend, torch with CUDA and torchjd (its
# quadprog-projector extra for UPGrad/DualProj); a missing TorchJD aggregator (CAGrad and Nash-MTL
# need cvxpy) is skipped and its cell left empty.
set -u
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch shares the device: no 75 % up-front grab by XLA
out=${1:-benchmarks/results}
mkdir -p "$out"
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import jax, torch; print('jax', jax.__version__, jax.devices()); print('torch', torch.__version__, torch.cuda.is_available())"
gradient=pcgrad,upgrad,mgda,imtl_g,aligned_mtl,nash_mtl
timeout "${RESNET_TIMEOUT:-280}" python3 bench_step.py --model resnet18 --tasks 40 \
  --methods "ew,rlw,$gradient" --steps 3 --rounds 3 --warmup 2 --out "$out" \
  2>&1 | grep -v '^{' | tail -40
timeout "${MLP_TIMEOUT:-200}" python3 bench_step.py --model mlp --tasks 40,2,10 \
  --methods all --steps 5 --rounds 4 --warmup 2 --out "$out" 2>&1 | grep -v '^{' | tail -5
