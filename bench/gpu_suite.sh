#!/usr/bin/env bash
# One call on a lent GPU machine: build sdrt._C with CUDA, run the CUDA tests, run the GPU
# benchmarks, write everything under $OUT (or bench/results/gpu-<date> when $OUT is unset).
#
# The GPU image has torch (CUDA), pybind11, scikit-build-core, cmake, ninja, pytest and
# transformers, but no network and no diffusers: carry wheels in .whl/ (see the device README),
# they are installed with --no-deps into a private target dir. Usage there:
#   bash bench/gpu_suite.sh [build] [test] [bench]    (from the repository root; default: all three)
# tools/gpu_session.sh runs the phases apart, so that no benchmark shares the GPU with training.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/gpu-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
status=0
step() { echo "=== $*"; }
PHASES="${*:-build test bench}"
want() { [[ " $PHASES " == *" $1 "* ]]; }

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

if want bench; then
step "benchmarks"
"$PY" bench/bench_step_kernels.py --device cuda --out "$OUT/step_kernels-cuda.json" 2>&1 | tee "$OUT/step_kernels-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" bench/bench_attention.py --device cuda --out "$OUT/attention-cuda.json" 2>&1 | tee "$OUT/attention-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" bench/bench_sdxl.py --device cuda --size 1024 --steps 20 --repeats 3 --out "$OUT/sdxl-cuda.json" 2>&1 \
  | tee "$OUT/sdxl-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
"$PY" bench/bench_controlnet.py --device cuda --size 512 --steps 20 --repeats 3 --out "$OUT/controlnet-cuda.json" 2>&1 \
  | tee "$OUT/controlnet-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

fi

step "done: results in $OUT (status $status)"
exit $status
