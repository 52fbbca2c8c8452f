#!/usr/bin/env bash
# One lent-GPU call that spends the lease well: toy-model training on the GPU overlaps the CPU-bound
# CUDA build and the CUDA tests; then the trained variants' acceptance runs (CUDA, fp16); then the
# benchmarks, with the GPU to themselves. Results come back as three archives under $OUT:
#   results.tgz (logs, build info, CUDA test output, benchmark JSON, acceptance JSON, training plan)
#   toy_<variant>.tgz (each trained toy folder, diffusers layout)
# Usage there, from the repository root:  bash tools/gpu_session.sh   (budget: ~8 minutes)
# Carry wheels the GPU image lacks in .whl/ (see /work/.library/device/README.md): diffusers,
# lark, importlib_metadata, and torchsde + trampoline for the SDE samplers (pip download --no-deps).
# Environment: SDRT_TRAIN_BUDGET_S (training wall clock, default 360), SDRT_TRAIN_ARGS (more
# tools/train_toy_gpu.py arguments, e.g. variants), SDRT_BUILD_JOBS (compile jobs; leave cores to the
# trainer), SDRT_SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
OUT="${OUT:-bench/results/gpu-session-$(date +%Y%m%d-%H%M%S)}"
RES=/tmp/sdrt-results TOY=/tmp/toy_variants
mkdir -p "$OUT" "$RES" "$TOY"
export PYTHONUNBUFFERED=1
PY=python3
status=0

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sdrt-site .whl/*.whl
  export PYTHONPATH="/tmp/sdrt-site${PYTHONPATH:+:$PYTHONPATH}"
fi

echo "=== toy training (background, GPU)"
( cd "$ROOT" && OMP_NUM_THREADS=2 PYTHONPATH="$ROOT/python:$PYTHONPATH" \
    "$PY" tools/train_toy_gpu.py --budget-s "${SDRT_TRAIN_BUDGET_S:-360}" --out-dir "$TOY" ${SDRT_TRAIN_ARGS:-} ) > "$RES/train_driver.log" 2>&1 &
TRAIN_PID=$!

CMAKE_BUILD_PARALLEL_LEVEL="${SDRT_BUILD_JOBS:-$(nproc)}" OUT="$RES" bash bench/gpu_suite.sh build test || status=1

echo "=== waiting for training"
wait $TRAIN_PID || status=1
cat "$RES/train_driver.log"
cp "$TOY"/*.log "$TOY"/plan.json "$RES"/ 2>/dev/null

echo "=== acceptance on CUDA"
for dir in "$TOY"/*/; do
  name=$(basename "$dir")
  [[ "$name" == calib_* ]] && continue
  [ -f "$dir/model_index.json" ] || continue
  (cd /tmp && "$PY" -m sdrt.toy.acceptance --model "$dir" --device cuda --out "$RES/acceptance_$name.json") 2>&1 \
    | tail -3 | sed "s/^/$name: /"
  tar -czf "$OUT/toy_$name.tgz" -C "$TOY" "$name"
done

[ -n "${SDRT_SKIP_BENCH:-}" ] || OUT="$RES" bash bench/gpu_suite.sh bench || status=1

tar -czf "$OUT/results.tgz" -C "$RES" .
ls -la "$OUT"
echo "=== session status $status"
exit $status
