"""How fast the planner's simulator replays a trace (issue 12: 10^6 requests in <= 15 s).

`python -m bench.sim_speed [--requests N] [--mpm event] [--rate 400]` builds a synthetic
access-log-like trace (Poisson connections of 1-8 kept-alive requests, exponential service
times) and times mpmd.tools.simulate.simulate over it for each MPM's compiled-in defaults, on
one core. It prints the simulated requests per second; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

from mpmd.config.build import load_config
from mpmd.tools.sim_report import SimSettings
from mpmd.tools.simulate import Request, simulate


def trace(n: int, rate: float, mean_service: float, seed: int = 12) -> list[Request]:
    """n requests: connections arrive at `rate` per second, each 1-8 requests 0-2 s apart."""
    rnd = random.Random(seed)
    out: list[Request] = []
    t = 0.0
    conn = 0
    while len(out) < n:
        t += rnd.expovariate(rate / 4.5)
        count = min(rnd.randint(1, 8), n - len(out))
        at = t
        for k in range(count):
            out.append(Request(at, rnd.expovariate(1 / mean_service), conn, k < count - 1))
            at += rnd.uniform(0.0, 2.0)
        conn += 1
    out.sort(key=lambda r: r.arrival)
    return out


def settings_for(mpm: str) -> SimSettings:
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "httpd.conf")
        with open(conf, "w") as f:
            f.write(f"LoadModule mpm_{mpm}_module x.so\nListen 8080\n")
        return SimSettings.from_config(load_config(conf), somaxconn=4096)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second")
    parser.add_argument("--service", type=float, default=0.02, help="mean service time, s")
    parser.add_argument("--mpm", default="prefork,worker,event")
    args = parser.parse_args()
    requests = trace(args.requests, args.rate, args.service)
    for mpm in args.mpm.split(","):
        settings = settings_for(mpm)
        started = time.process_time()
        result = simulate(requests, settings)
        took = time.process_time() - started
        s = result.summary
        print(
            f"{mpm:8} {len(requests):>9} requests in {took:6.2f} s CPU = "
            f"{len(requests) / took:>9,.0f} req/s | p50 {s.p50_ms:.1f} ms p99 {s.p99_ms:.1f} ms, "
            f"peak {s.peak_processes} processes, {s.peak_busy_threads} busy, "
            f"Little {s.little_error:.2e}"
        )


if __name__ == "__main__":
    main()
