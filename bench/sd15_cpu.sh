#!/usr/bin/env bash
# Issue 18's CPU measurement: ../shared/baselines/sd15_cpu_step.py (one SD1.5 CFG UNet step at 512x512,
# diffusers eager fp32 and plain OpenVINO alternating with the candidate) once per sdrt candidate of
# bench/sd15_cpu_candidates.py, one process each (24 GB machine), then one JSON of all runs.
# Usage (repository root): bash bench/sd15_cpu.sh WORKDIR [CANDIDATE ...]   (~10 min per candidate here)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:?usage: bash bench/sd15_cpu.sh WORKDIR [CANDIDATE ...]}"; shift
CANDIDATES="${*:-openvino_sdrt_export openvino_ir torch_bf16 torch_sdrt_attention}"
BASELINE="${SDRT_BASELINE:-../shared/baselines/sd15_cpu_step.py}"
PY="${PYTHON:-python}"
mkdir -p "$WORK"
for name in $CANDIDATES; do
  echo "=== $name"
  "$PY" "$BASELINE" "$WORK" --candidate "bench.sd15_cpu_candidates:$name" --repeats "${REPEATS:-3}" 2>&1 \
    | grep -v -i "warning" | tee "$WORK/$name.txt"
  cp "$WORK/result.json" "$WORK/result-$name.json"
done
"$PY" - "$WORK" $CANDIDATES <<'PY'
import json, os, platform, sys
work, names = sys.argv[1], sys.argv[2:]
runs = {}
for n in names:
    run = json.load(open(os.path.join(work, f"result-{n}.json")))
    numerics = json.load(open(os.path.join(work, f"numerics-{n}.json")))
    runs[n] = {**run, **numerics}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
out = {"benchmark": "one SD1.5 CFG UNet step at 512x512 (batch 2, 77 tokens), random weights; "
                    "../shared/baselines/sd15_cpu_step.py per candidate",
       "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}, "runs": runs}
json.dump(out, open(os.path.join(work, "sd15_cpu_step.json"), "w"), indent=1)
for n, r in runs.items():
    c = r["result"]["candidate"]
    print(f"{n:22s} {c['median_s']:6.2f} s  x{c['vs_diffusers_fp32']:.2f} diffusers fp32  "
          f"x{c['vs_openvino_bf16']:.2f} openvino  rel L2 {r['relative_l2_vs_fp32']:.1e}")
PY
