"""The memory-heavy WSGI application of the advisor's quality study (bench/advise_quality.py).

It holds MEMORY_MB of private memory from import on, as an application that loads a model or a
cache per process does (mpmd imports the application in each child, after the fork, so every
child holds its own copy), and sleeps SLEEP_MS per request. With a small memory budget the
budget, not the traffic, limits how many processes fit. Thread safe: the data is read-only.
"""

import time

MEMORY_MB = 160
SLEEP_MS = 50

# written, not just reserved: every page is resident and private to the child that imported it
HELD = b"\x01" * (MEMORY_MB << 20)


def app(environ, start_response):
    time.sleep(SLEEP_MS / 1000)
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [body]
