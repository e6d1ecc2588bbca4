#!/usr/bin/env bash
# The accelerator benchmarks behind the README's GPU table, one process per measurement:
#
#     bash benchmarks/gpu.sh [OUTDIR]      # default runs/benchmark_gpu
#
# 1. lenet300-100, bfloat16: one jitted call per step against a scan of 8 and of 64 steps.
# 2. WRN-28-10 (CIFAR-10 shapes, batch 128, bfloat16): weight and mask step, and an epoch of
#    390 steps through the runs' own loop (augmentation included).
# 3. The digits experiment (real data, all three regimes) end to end.
# 4. WRN-28-10 mask step with every estimator, and top-k's k-th value by search and by sort.
# Each step has its own time bound and all of them together TOTAL_SECONDS; a failed step does
# not stop the next. WRN_MODEL and EPOCH_STEPS make a small dry run possible on a CPU.
set -u
out=${1:-runs/benchmark_gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
wrn=${WRN_MODEL:-wrn28-10}
epoch_steps=${EPOCH_STEPS:-390}
deadline=$(( $(date +%s) + ${TOTAL_SECONDS:-3600} ))
export PYTHONUNBUFFERED=1

step() {  # step SECONDS ARGS...: python -m ARGS..., bounded by SECONDS and the deadline
  local limit=$1; shift
  local left=$(( deadline - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit <= 0 )); then echo "== skipped (no time left): $*"; return; fi
  echo "== $(date +%T) [${limit}s] $*"
  timeout "$limit" "$py" -m "$@"
  echo "== exit $?"
}

$py -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax',
flax.__version__, 'optax', optax.__version__, 'orbax', o.__version__, jax.devices())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm \
  --format=csv,noheader

step 120 benchmarks.suite --models lenet300-100 --dtype bfloat16 --steps 30 --warmup 3 \
  --steps-per-call 8 --out "$out/lenet300-100_k8.json"
step 330 benchmarks.suite --models "$wrn" --dtype bfloat16 --estimators threshold \
  --steps-per-call 1 --steps 10 --warmup 2 --epoch-steps "$epoch_steps" --out "$out/$wrn.json"
step 180 experiments.digits --workdir "$out/digits" --overwrite
step 60 benchmarks.suite --models lenet300-100 --dtype bfloat16 --estimators threshold \
  --steps 30 --warmup 3 --steps-per-call 64 --out "$out/lenet300-100_k64.json"
step 200 benchmarks.suite --models "$wrn" --dtype bfloat16 --modes mask \
  --steps-per-call 1 --steps 10 --warmup 2 --out "$out/${wrn}_estimators.json"
step 60 benchmarks.topk --model "$wrn" --out "$out/topk_$wrn.json"
