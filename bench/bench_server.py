"""`sdrt serve` throughput and latency at 1, 4 and 16 concurrent clients on the toy model, against
the Python API called directly in one process (what the server's single worker does per job).

Both generate the same requests (toy model, 64 px, N steps, Euler a, a fresh seed each). The
direct baseline is sequential calls of `pipe.txt2img` plus the PNG encoding the server also does;
server overhead = direct throughput / server throughput (1.0 = no overhead). Client threads and
the server share the machine's cores, as a co-located client would.
Run:  python bench/bench_server.py [--requests 48] [--steps 8] [--out FILE]
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


def direct(n: int, steps: int) -> dict:
    import sdrt
    from sdrt.server.images import encode_png

    pipe = sdrt.load("toy")
    pipe.txt2img("a red circle", seed=0, steps=steps, width=64, height=64)  # warm-up
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = pipe.txt2img("a red circle", seed=i, steps=steps, width=64, height=64, sampler_name="Euler a")
        encode_png(r.images[0], r.infotexts[0])
        latencies.append(time.perf_counter() - t)
    return summarize(latencies, time.perf_counter() - start)


def through_server(server: ServerProcess, n: int, steps: int, clients: int) -> dict:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=clients))

    def one(i):
        t = time.perf_counter()
        r = session.post(f"{server.api}/txt2img", json={"prompt": "a red circle", "seed": i, "steps": steps,
                                                        "width": 64, "height": 64, "sampler_name": "Euler a"},
                         timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t

    one(0)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(n)))
    return summarize(latencies, time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=48)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "server-cpu.json"))
    args = p.parse_args()
    base = direct(args.requests, args.steps)
    print(f"direct Python API: {base['requests_per_s']:.2f} req/s, p50 {base['p50_s'] * 1e3:.1f} ms")
    rows = []
    server = ServerProcess("--queue-size", "64").wait_ready()
    try:
        for clients in (1, 4, 16):
            r = through_server(server, args.requests, args.steps, clients)
            r["clients"] = clients
            r["overhead_direct_over_server_throughput"] = round(base["requests_per_s"] / r["requests_per_s"], 3)
            rows.append(r)
            print(f"server, {clients:>2} clients: {r['requests_per_s']:.2f} req/s, p50 {r['p50_s'] * 1e3:.1f} ms, "
                  f"p95 {r['p95_s'] * 1e3:.1f} ms, overhead x{r['overhead_direct_over_server_throughput']:.3f}")
    finally:
        server.terminate()
    write_results(args.out, {"benchmark": "server", "model": "toy", "size": 64, "steps": args.steps,
                             "sampler": "Euler a", "baseline": "direct Python API, sequential, with PNG encoding",
                             "direct": base, "server": rows, "machine": machine_description()})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
