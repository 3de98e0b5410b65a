"""Micro-benchmark of the sans-I/O protocol engine: parse pipelined browser-like GETs.

Measures the parser alone (no sockets, no handler): N copies of a typical browser GET are fed
in 16 KiB pieces, as recv() would return them, and every request is taken with
next_request() and finished with finish_request(). Prints requests/s (best of --repeat).

    python bench/protocol_micro.py [--requests 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

from mpmd.config.model import HttpSettings, ReadTimeoutStage
from mpmd.http.protocol import HttpProtocol

SETTINGS = HttpSettings(
    timeout=60,
    keep_alive=True,
    keep_alive_timeout=5,
    max_keep_alive_requests=0,
    limit_request_line=8190,
    limit_request_field_size=8190,
    limit_request_fields=100,
    limit_request_body=1073741824,
    header_read_timeout=ReadTimeoutStage(20, 40, 500),
    body_read_timeout=ReadTimeoutStage(20, 0, 500),
)

BROWSER_GET = (
    b"GET /static/app.js?v=3 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: */*\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"Sec-Fetch-Site: same-origin\r\n"
    b"\r\n"
)
WRK_GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def run(request: bytes, count: int, piece: int) -> float:
    """Seconds to parse `count` pipelined copies of `request` fed in `piece`-byte reads."""
    stream = request * count
    chunks = [stream[i : i + piece] for i in range(0, len(stream), piece)]
    protocol = HttpProtocol(SETTINGS)
    feed = protocol.feed
    next_request = protocol.next_request
    finish = protocol.finish_request
    parsed = 0
    start = time.perf_counter()
    for chunk in chunks:
        feed(chunk)
        while (req := next_request()) is not None:
            finish(req)
            parsed += 1
    elapsed = time.perf_counter() - start
    assert parsed == count, parsed
    return elapsed


def run_one_per_feed(request: bytes, count: int) -> float:
    """Seconds for `count` requests each arriving alone (the keep-alive, non-pipelined case)."""
    protocol = HttpProtocol(SETTINGS)
    feed = protocol.feed
    next_request = protocol.next_request
    finish = protocol.finish_request
    start = time.perf_counter()
    for _ in range(count):
        feed(request)
        finish(next_request())  # type: ignore[arg-type]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.requests
    cases = [
        ("browser GET, pipelined, 16 KiB reads", lambda: run(BROWSER_GET, n, 16384)),
        ("browser GET, one request per feed", lambda: run_one_per_feed(BROWSER_GET, n)),
        ("wrk GET, one request per feed", lambda: run_one_per_feed(WRK_GET, n)),
    ]
    for name, fn in cases:
        best = min(fn() for _ in range(args.repeat))
        print(f"{name:40s} {n / best:>12,.0f} req/s  ({best * 1e6 / n:.2f} us/request)")


if __name__ == "__main__":
    main()
