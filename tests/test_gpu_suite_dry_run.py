"""bench/gpu_suite.sh's CPU dry run (SDRT_GPU_SUITE_DRY_RUN=1): every GPU benchmark of the suite runs
end to end on the toy architecture, so that a script error costs CI minutes, not device minutes."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
EXPECTED = ("sd15-cpu", "attention-cpu", "sdxl-cpu", "controlnet-cpu", "step_kernels-cpu", "sd15_max_autotune-cpu")


def test_gpu_suite_dry_run_writes_every_result(tmp_path):
    env = {**os.environ, "SDRT_GPU_SUITE_DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_suite.sh")], env=env, capture_output=True,
                          text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    for name in EXPECTED:
        with open(tmp_path / f"{name}.json", encoding="utf-8") as f:
            json.load(f)
    sd15 = json.loads((tmp_path / "sd15-cpu.json").read_text())
    assert set(sd15["results"]) == {"diffusers_eager", "diffusers_compile", "sdrt_eager", "sdrt_reduce_overhead"}
    for name, r in sd15["results"].items():
        assert r["it_per_s_median"] > 0 and math.isfinite(r["it_per_s_median"]), name
        # compiled or eager, fp32 on the CPU: the same UNet as the fp32 reference up to float rounding
        assert r["unet_relative_l2_vs_fp32"] < 1e-4, (name, r["unet_relative_l2_vs_fp32"])
    tuned = json.loads((tmp_path / "sd15_max_autotune-cpu.json").read_text())["results"]["sdrt_max_autotune"]
    assert tuned["unet_relative_l2_vs_fp32"] < 1e-4
