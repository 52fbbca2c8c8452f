"""`sdrt serve` throughput and latency at 1, 4 and 16 concurrent clients on the toy model, against
the Python API called directly in one process (what the server's single worker does per job).

Both generate the same requests (toy model, 64 px, N steps, Euler a, a fresh seed each). The
direct baseline is sequential calls of `pipe.txt2img` plus the PNG encoding the server also does;
server overhead = direct throughput / server throughput (1.0 = no overhead). Client threads and
the server share the machine's cores, as a co-located client would. The configurations run in
alternating rounds (direct, 1, 4, 16 clients, then again), so drift of the machine hits all alike.
Run:  python bench/bench_server.py [--requests 64] [--rounds 4] [--steps 8] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "server"))
from server_process import ServerProcess  # noqa: E402
from timer import machine_description, write_results  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarize(latencies: list[float], wall: float) -> dict:
    return {"requests": len(latencies), "wall_s": round(wall, 4), "requests_per_s": round(len(latencies) / wall, 3),
            "p50_s": round(statistics.median(latencies), 4), "p95_s": round(percentile(latencies, 0.95), 4)}


class Direct:
    def __init__(self, steps: int):
        import sdrt

        self.pipe, self.steps = sdrt.load("toy"), steps
        self.run(0)  # warm-up

    def run(self, seed: int) -> float:
        from sdrt.server.images import encode_png

        t = time.perf_counter()
        r = self.pipe.txt2img("a red circle", seed=seed, steps=self.steps, width=64, height=64, sampler_name="Euler a")
        encode_png(r.images[0], r.infotexts[0])
        return time.perf_counter() - t

    def batch(self, seeds: range) -> tuple[list[float], float]:
        start = time.perf_counter()
        return [self.run(i) for i in seeds], time.perf_counter() - start


class ThroughServer:
    def __init__(self, server: ServerProcess, steps: int):
        self.server, self.steps = server, steps
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        self.one(0)  # warm-up

    def one(self, seed: int) -> float:
        t = time.perf_counter()
        r = self.session.post(f"{self.server.api}/txt2img", json={"prompt": "a red circle", "seed": seed,
                                                                  "steps": self.steps, "width": 64, "height": 64,
                                                                  "sampler_name": "Euler a"}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t

    def batch(self, seeds: range, clients: int) -> tuple[list[float], float]:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(self.one, seeds))
        return latencies, time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "server-cpu.json"))
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    per_round = max(1, args.requests // args.rounds)
    direct = Direct(args.steps)
    server = ServerProcess("--queue-size", "64").wait_ready()
    collected = {key: ([], 0.0) for key in ("direct", 1, 4, 16)}
    try:
        remote = ThroughServer(server, args.steps)
        for r in range(args.rounds):
            seeds = range(r * per_round, (r + 1) * per_round)
            for key in collected:
                lat, wall = direct.batch(seeds) if key == "direct" else remote.batch(seeds, key)
                collected[key] = (collected[key][0] + lat, collected[key][1] + wall)
    finally:
        server.terminate()
    base = summarize(*collected["direct"])
    print(f"direct Python API: {base['requests_per_s']:.2f} req/s, p50 {base['p50_s'] * 1e3:.1f} ms")
    rows = []
    for clients in (1, 4, 16):
        r = summarize(*collected[clients])
        r["clients"] = clients
        r["overhead_direct_over_server_throughput"] = round(base["requests_per_s"] / r["requests_per_s"], 3)
        rows.append(r)
        print(f"server, {clients:>2} clients: {r['requests_per_s']:.2f} req/s, p50 {r['p50_s'] * 1e3:.1f} ms, "
              f"p95 {r['p95_s'] * 1e3:.1f} ms, overhead x{r['overhead_direct_over_server_throughput']:.3f}")
    write_results(args.out, {"benchmark": "server", "model": "toy", "size": 64, "steps": args.steps,
                             "sampler": "Euler a", "baseline": "direct Python API, sequential, with PNG encoding", "rounds": args.rounds,
                             "direct": base, "server": rows, "machine": machine_description()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
