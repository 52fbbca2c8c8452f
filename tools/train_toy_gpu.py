"""Train toy-model variants side by side on one GPU within a wall-clock budget (one lent-GPU call).

    python tools/train_toy_gpu.py --budget-s 400 --out-dir /tmp/toy_variants [--variant NAME=ARGS ...]

The trainer (`python -m sdrt.toy.train`) takes step counts, not times, so that every run is
reproducible from its recorded command. This driver measures the per-step time of each phase with a
short calibration run of every variant (all running at once, as in the real run), then gives each
variant the step counts that fit the remaining budget, rounded down to multiples of 100, and runs
them at once. Every variant's folder holds toy_training.json with the exact command.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

DEFAULT_VARIANTS = {"base": "", "widevae": "--vae-channels 64,64,128,128",
                    "wide": "--vae-channels 64,64,128,128 --unet-channels 96,192"}
SHARES = {"vae": 0.35, "decoder": 0.10, "unet": 0.55}  # of the training time left after calibration
CAPS = {"vae": 20000, "decoder": 5000, "unet": 40000}
RENDER_S_PER_IMAGE = 0.0005  # one core, measured ~0.4 ms on the dev machine


def run_all(commands: dict[str, list[str]], log_dir: str, deadline: float) -> dict[str, int]:
    procs = {}
    for name, cmd in commands.items():
        log = open(os.path.join(log_dir, f"{name}.log"), "a", encoding="utf-8")
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    codes = {}
    for name, proc in procs.items():
        try:
            codes[name] = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[name] = -9
            print(f"{name}: killed at the deadline", flush=True)
    return codes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, required=True, help="wall-clock seconds for everything")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--workers", type=int, default=4, help="render processes per variant")
    p.add_argument("--pool-size", type=int, default=60000)
    p.add_argument("--dataset-size", type=int, default=100000)
    p.add_argument("--device", default="cuda")
    p.add_argument("--unet-only", action="store_true",
                   help="variants resume a trained folder (--resume in their arguments): plan UNet steps only")
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--unet-batch", type=int, default=256)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--variant", action="append", default=[], help="NAME=extra trainer arguments")
    args = p.parse_args()
    start = time.time()
    deadline = start + args.budget_s
    variants = dict(v.split("=", 1) for v in args.variant) if args.variant else DEFAULT_VARIANTS
    os.makedirs(args.out_dir, exist_ok=True)
    train = [sys.executable, "-m", "sdrt.toy.train"]
    common = ["--device", args.device, "--seed", "0", "--vae-batch", str(args.vae_batch),
              "--unet-batch", str(args.unet_batch), "--unet-lr", str(args.unet_lr)]

    shares = {"vae": 0.0, "decoder": 0.0, "unet": 0.95} if args.unet_only else SHARES
    calib_steps = {ph: (60 if ph != "decoder" else 30) if shares[ph] else 0 for ph in shares}
    calib = {name: train + common + shlex.split(extra) + [
        "--out", os.path.join(args.out_dir, f"calib_{name}"), "--workers", "1", "--pool-size", "1000",
        "--dataset-size", "1000", "--vae-steps", str(calib_steps["vae"]), "--decoder-steps",
        str(calib_steps["decoder"]), "--unet-steps", str(calib_steps["unet"])] for name, extra in variants.items()}
    codes = run_all(calib, args.out_dir, deadline)
    if any(codes.values()):
        print(f"calibration failed: {codes}", flush=True)
        return 1
    per_step = {}
    for name in variants:
        with open(os.path.join(args.out_dir, f"calib_{name}", "toy_training.json"), encoding="utf-8") as f:
            rec = json.load(f)
        records = {"vae": rec["vae"], "decoder": rec["decoder_finetune"], "unet": rec["unet_and_text_encoder"]}
        per_step[name] = {ph: records[ph]["seconds"] / calib_steps[ph] for ph in shares if calib_steps[ph]}
    print("seconds per step:", json.dumps(per_step), flush=True)

    rendered = args.dataset_size + (0 if args.unet_only else args.pool_size)
    overhead = 30 + rendered * RENDER_S_PER_IMAGE / args.workers
    available = 0.85 * (deadline - time.time() - overhead)
    commands, plans = {}, {}
    for name, extra in variants.items():
        steps = {ph: min(CAPS[ph], int(shares[ph] * available / per_step[name][ph]) // 100 * 100) if shares[ph] else 0
                 for ph in shares}
        plans[name] = steps
        if min(v for ph, v in steps.items() if shares[ph]) < 100:
            print(f"{name}: the budget leaves too few steps {steps}; not training it", flush=True)
            continue
        commands[name] = train + common + shlex.split(extra) + [
            "--out", os.path.join(args.out_dir, name), "--workers", str(args.workers),
            "--pool-size", str(args.pool_size), "--dataset-size", str(args.dataset_size),
            "--vae-steps", str(steps["vae"]), "--decoder-steps", str(steps["decoder"]),
            "--unet-steps", str(steps["unet"])]
    print(f"plan ({available:.0f}s of training each):", json.dumps(plans), flush=True)
    if not commands:
        return 1
    codes = run_all(commands, args.out_dir, deadline)
    print("exit codes:", codes, f"after {time.time() - start:.0f}s", flush=True)
    with open(os.path.join(args.out_dir, "plan.json"), "w", encoding="utf-8") as f:
        json.dump({"per_step_s": per_step, "plans": plans, "exit_codes": codes,
                   "seconds": round(time.time() - start, 1)}, f, indent=2)
    return 0 if not any(codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
