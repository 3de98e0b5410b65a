"""Two of the three WSGI applications of the advisor's quality study (bench/advise_quality.py);
the memory-heavy one is bench/quality_memory_app.py, a module of its own because it allocates
at import.

Each answers every path alike, so a trace needs no URL mix and the advisor's probe (GET /) sees
what production sees. Both are thread safe (no shared mutable state).

* `cpu_app` spins CPU_MS of the thread's CPU time: CPU-bound, the GIL serialises it in threads.
* `io_app` sleeps IO_MS: a handler that waits on a back end, holding its worker but no CPU.
"""

import time

CPU_MS = 8
IO_MS = 100

BODY = b"ok\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def cpu_app(environ, start_response):
    end = time.thread_time() + CPU_MS / 1000
    while time.thread_time() < end:
        pass
    start_response("200 OK", HEADERS)
    return [BODY]


def io_app(environ, start_response):
    time.sleep(IO_MS / 1000)
    start_response("200 OK", HEADERS)
    return [BODY]
