#!/usr/bin/env bash
# One call on a lent GPU machine: build sdrt._C with CUDA, run the CUDA tests, run the GPU
# benchmarks, write everything under $OUT (or bench/results/gpu-<date> when $OUT is unset).
#
# The GPU image has torch (CUDA), pybind11, scikit-build-core, cmake, ninja, pytest and
# transformers, but no network and no diffusers: carry wheels in .whl/ (see the device README),
# they are installed with --no-deps into a private target dir. Usage there:
#   bash bench/gpu_suite.sh [build] [test] [bench]    (from the repository root; default: all three)
# tools/gpu_session.sh runs the phases apart, so that no benchmark shares the GPU with training.
# SDRT_GPU_SUITE_DRY_RUN=1: the bench phase on the CPU with the toy architecture and tiny sizes, so
# that a script error shows here (tests/test_gpu_suite_dry_run.py, in CI), not in device minutes;
# build and test need CUDA and are skipped. Time limits: the bench phase's per-benchmark timeouts add up
# to 10.5 minutes; expected on an H200 (never run yet): build ~2, tests ~1, bench ~5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status=0
step() { echo "=== $*"; }
PHASES="${*:-build test bench}"
want() { [[ " $PHASES " == *" $1 "* ]]; }

if [ -n "${SDRT_GPU_SUITE_DRY_RUN:-}" ]; then
  DEV=cpu PHASES=bench
  KERNELS="--batches 1 --latent-sizes 8 --repeats 2" ATTENTION="--repeats 1"
  SD15="--tiny --size 64 --steps 3 --repeats 1" SDXL="--tiny --size 64 --steps 3 --repeats 1"
  CONTROLNET="--tiny --size 64 --steps 3 --repeats 1"
else
  DEV=cuda KERNELS="" ATTENTION=""
  SD15="--size 512 --steps 20 --repeats 3" SDXL="--size 1024 --steps 20 --repeats 3"
  CONTROLNET="--size 512 --steps 20 --repeats 3"
fi

if compgen -G ".whl/*.whl" > /dev/null; then
  if [ ! -d /tmp/sdrt-site ]; then
    step "carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/sdrt-site .whl/*.whl
  fi
  export PYTHONPATH="/tmp/sdrt-site${PYTHONPATH:+:$PYTHONPATH}"
fi

if want build; then
step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1;
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/machine.txt"

step "build sdrt._C with CUDA"
export SDRT_ENABLE_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
if ! "$PY" -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1; then
  tail -50 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
cd /tmp  # import the installed package, not the source tree
"$PY" -c "import sdrt._C as C, json; i = C.build_info(); print(json.dumps(i)); assert i['cuda'], 'built without CUDA'" \
  | tee "$OUT/build_info.json" || exit 1
cd - > /dev/null
fi

if want test; then
step "pytest -m cuda"
SDRT_REQUIRE_CUDA=1 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests 2>&1 | tail -30 | tee "$OUT/pytest_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi

run_bench() {  # run_bench NAME TIMEOUT_S script args...: NAME.json and NAME.txt under $OUT
  local name="$1" limit="$2"; shift 2
  timeout "$limit" "$PY" "$@" --out "$OUT/$name.json" 2>&1 | tee "$OUT/$name.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "FAILED: $name"; status=1; }
}

if want bench; then
step "benchmarks"
# shellcheck disable=SC2086  # the argument strings above split on purpose
{
# the Done-when measurement first: SD1.5 512, diffusers eager / torch.compile against sdrt eager / compiled
run_bench "sd15-$DEV" 300 bench/bench_sd15.py --device $DEV $SD15 \
  --candidates diffusers_eager,diffusers_compile,sdrt_eager,sdrt_reduce_overhead
run_bench "attention-$DEV" 60 bench/bench_attention.py --device $DEV $ATTENTION
run_bench "sdxl-$DEV" 120 bench/bench_sdxl.py --device $DEV $SDXL
run_bench "controlnet-$DEV" 90 bench/bench_controlnet.py --device $DEV $CONTROLNET
run_bench "step_kernels-$DEV" 60 bench/bench_step_kernels.py --device $DEV $KERNELS
# max-autotune tunes for minutes: a call of its own (SDRT_GPU_SUITE_MAX_AUTOTUNE=1 bash bench/gpu_suite.sh bench)
if [ -n "${SDRT_GPU_SUITE_MAX_AUTOTUNE:-}" ] || [ -n "${SDRT_GPU_SUITE_DRY_RUN:-}" ]; then
  run_bench "sd15_max_autotune-$DEV" 420 bench/bench_sd15.py --device $DEV $SD15 \
    --candidates diffusers_compile,sdrt_max_autotune
fi
}
fi

step "done: results in $OUT (status $status)"
exit $status
