#!/usr/bin/env bash
# The GPU benchmark run, end to end in at most 8 minutes (hard per-part timeouts summing to 480 s):
#   (a) ResNet-18 (CelebA-like: 64x64, batch 256, T = 40): the Gramian methods + EW, with
#       --chunk-size 8 rows for MGDA and UPGrad;
#   (b) SegNet-style NYUv2-like dense prediction (128x160, batch 8, T = 3: segmentation, depth,
#       normals);
#   (c) the MLP at T = 40, 2, 10 with --feature-mode rows;
# each against TorchJD's same aggregator and LibMTL's same weighting on the same torch model, with
# XLA's and torch's step memory. Results (JSON + markdown, the device named in them) go to $1,
# default benchmarks/results/gpu_<GPU name>/ (never over the committed results), with the log.
#
# Needs jax with a GPU backend, torch with CUDA, torchjd (its quadprog-projector extra for
# UPGrad/DualProj) and LibMTL (pip install --no-deps LibMTL==1.1.5; cvxpy for Nash-MTL); a missing
# reference is skipped and its cell left empty. Each part also gets a --budget-s below its timeout:
# bench_step.py skips the warm-ups and rounds it has no time for, and still writes its results.
#
#   bash benchmarks/run_gpu.sh [OUT_DIR]
#   RUN_GPU_DRY=1 bash benchmarks/run_gpu.sh /tmp/x   # no GPU needed: parses each command line
#   RUN_GPU_SMOKE=1 bash benchmarks/run_gpu.sh /tmp/x # no GPU needed: tiny sizes, one step each
# PYTHON=... picks the interpreter (default python3).
set -u
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # torch shares the device: no 75 % up-front grab by XLA
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
dry=${RUN_GPU_DRY:-}
smoke=${RUN_GPU_SMOKE:-}

gpu=$(timeout 10 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
slug=$(printf '%s' "${gpu:-no-gpu}" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '_' | sed 's/_$//')
out=${1:-$here/results/gpu_$slug}
mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/run_gpu.log"
echo "GPU: ${gpu:-none found}; results in $out" | tee "$log"

if [ -z "$dry$smoke" ]; then
  # 20 s: abort rather than spend 8 minutes benchmarking the CPU
  check=$(timeout 20 "$py" -c "import jax, torch; d = jax.devices()[0]; \
print('jax', jax.__version__, d, '| torch', torch.__version__, torch.cuda.is_available()); \
assert d.platform == 'gpu' and torch.cuda.is_available(), 'no GPU for jax or torch'" 2>&1)
  rc=$?
  echo "$check" | tail -n 3 | tee -a "$log"
  if [ "$rc" -ne 0 ]; then
    echo "no GPU visible to both jax and torch (exit status $rc): stopping" | tee -a "$log"
    exit 1
  fi
fi

# One part: its timeout, then bench_step.py's arguments (its --budget-s leaves the timeout 30-45 s
# of slack for start-up and the last round). RUN_GPU_DRY adds --dry-run; RUN_GPU_SMOKE shrinks
# every model and runs one step of each variant (later flags override earlier ones).
part() {
  local limit=$1
  shift
  local extra=()
  if [ -n "$dry" ]; then
    extra=(--dry-run)
  elif [ -n "$smoke" ]; then
    extra=(--steps 1 --rounds 1 --warmup 1 --torch-threads 1 --budget-s 60)
    case "$*" in
      *"--model resnet18"*) extra+=(--batch 2 --image-size 16) ;;
      *"--model segnet"*) extra+=(--batch 2 --image-size 8 --hidden 4) ;;
      *) extra+=(--batch 8 --hidden 16) ;;
    esac
  fi
  echo "== timeout $limit: bench_step.py $* ${extra[*]+${extra[*]}}" | tee -a "$log"
  timeout "$limit" "$py" "$here/bench_step.py" "$@" ${extra[@]+"${extra[@]}"} --out "$out" 2>&1 \
    | tee -a "$log" | grep -v '^{' | tail -n 60
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || echo "   (exit status $rc; 124: timed out)" | tee -a "$log"
}

# (a) 230 s
part 230 --model resnet18 --tasks 40 --methods ew,mgda,upgrad,pcgrad,aligned_mtl \
  --chunk-size 8 --chunk-methods mgda,upgrad --steps 3 --rounds 3 --warmup 2 --budget-s 185
# (b) 90 s
part 90 --model segnet --methods ew,mgda,pcgrad,cagrad,imtl,gradvac,uw \
  --steps 5 --rounds 3 --warmup 2 --budget-s 60
# (c) 130 s
part 130 --model mlp --tasks 40,2,10 --methods ew,mgda,pcgrad,upgrad,imtl --feature-mode \
  --steps 5 --rounds 3 --warmup 2 --budget-s 95
# total: 10 (nvidia-smi) + 20 (check) + 230 + 90 + 130 = 480 s
