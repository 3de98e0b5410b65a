"""A WSGI app whose handlers take known times, named in the path so an access log's URL says it.

`/sleep/20` waits 20 ms (an I/O-bound handler: the thread is held, the CPU is not); `/spin/5`
burns 5 ms of CPU. The planner's accuracy study (bench/plan_accuracy.py) and `--calibrate`'s
test replay traces of these paths against a real server.
"""

import time


def app(environ, start_response):
    parts = environ.get("PATH_INFO", "").strip("/").split("/")
    kind, ms = [*parts, "", ""][:2]
    try:
        seconds = float(ms) / 1000
    except ValueError:
        seconds = 0.0
    if kind == "sleep":
        time.sleep(seconds)
    elif kind == "spin":
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [body]
