"""Speed of reading access logs back (issue 12's target: 1,000,000 combined+%D lines in at most
10 s on one core).

Writes N combined+%D lines into a temporary file (500 clients, 2,000 URL paths with queries,
40 user agents, ~300 requests/s so each second's timestamp repeats, a few 404s and 500s), then
times tools/accesslog.py reading the file: every field (what `mpmctl logs` asks for) and only
the planner's fields (time, service, keep-alive, client). Prints the CPU seconds of the best of
--repeat passes and lines per second. Pin it to one core to measure "one core":

    PYTHONPATH=$PWD/src taskset -c 1 python bench/logparse_speed.py [--lines 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time

from mpmd.logs.logformat import COMBINED
from mpmd.tools.accesslog import LogParser, read_access_log

FORMAT = COMBINED + " %D"
PLANNER_FIELDS = ("time", "service", "keepalive", "client")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def write_log(path: str, count: int, seed: int = 12) -> None:
    """`count` combined+%D lines, realistic enough that caches see a real site's repetition."""
    rng = random.Random(seed)
    clients = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
               for _ in range(500)]  # fmt: skip
    paths = [f"/section{n % 37}/item{n}" + ("?page=2&sort=asc" if n % 5 == 0 else "")
             for n in range(2000)]  # fmt: skip
    agents = [f"Mozilla/5.0 (X11; Linux x86_64; rv:{100 + n}.0) Gecko/20100101 Firefox/{100 + n}.0"
              for n in range(40)]  # fmt: skip
    start = 1_795_665_600  # 2026-11-26 04:00 UTC
    stamps: dict[int, str] = {}
    with open(path, "w", encoding="latin-1") as out:
        when = float(start)
        batch = []
        for _ in range(count):
            when += rng.expovariate(300.0)
            sec = int(when)
            stamp = stamps.get(sec)
            if stamp is None:
                tm = time.gmtime(sec)
                stamp = (f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
                         f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000]")  # fmt: skip
                stamps.clear()
                stamps[sec] = stamp
            status = rng.choices((200, 304, 404, 500), (90, 6, 3, 1))[0]
            size = "-" if status == 304 else str(rng.randrange(200, 90_000))
            referer = "-" if rng.random() < 0.3 else f"https://www.example.com{rng.choice(paths)}"
            batch.append(
                f'{rng.choice(clients)} - - {stamp} "GET {rng.choice(paths)} HTTP/1.1" {status} '
                f'{size} "{referer}" "{rng.choice(agents)}" {int(rng.expovariate(1 / 8000))}\n'
            )
            if len(batch) >= 10_000:
                out.writelines(batch)
                batch.clear()
        out.writelines(batch)


def measure(path: str, fields: tuple[str, ...], repeat: int) -> tuple[float, float, int, int]:
    """(best CPU seconds, its wall seconds, records, skipped) over `repeat` passes."""
    best = (float("inf"), 0.0, 0, 0)
    for _ in range(repeat):
        parser = LogParser(FORMAT, fields)
        cpu, wall = time.process_time(), time.perf_counter()
        result = read_access_log(path, parser)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if cpu < best[0]:
            best = (cpu, wall, len(result.records), result.skipped)
        del result
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    ns = p.parse_args()
    affinity = sorted(os.sched_getaffinity(0))
    print(f"Python {platform.python_version()}, CPUs allowed: {affinity}, format: {FORMAT}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "access_log")
        write_log(path, ns.lines)
        print(f"{ns.lines:,} lines, {os.path.getsize(path) / 2**20:.1f} MiB")
        for label, fields in (("all fields", None), ("planner fields", PLANNER_FIELDS)):
            cpu, wall, records, skipped = measure(
                path, fields or LogParser(FORMAT).fields, ns.repeat
            )
            print(f"{label:>15}: {cpu:6.2f} s CPU ({wall:.2f} s wall), "
                  f"{records / cpu:,.0f} lines/s, {records:,} records, {skipped} skipped")  # fmt: skip


if __name__ == "__main__":
    main()
