"""WSGI applications the integration tests mount (WSGIApp / testapp:NAME)."""

import os
import time


def hello(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def info(environ, start_response):
    """Reports the serving process and the WSGI facts a test wants to check."""
    body = (
        f"pid={os.getpid()} multithread={environ['wsgi.multithread']} "
        f"multiprocess={environ['wsgi.multiprocess']} script={environ['SCRIPT_NAME']} "
        f"path={environ['PATH_INFO']}"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def sleepy(environ, start_response):
    """Sleeps for ?seconds (default 0.5), then answers with its pid."""
    query = environ.get("QUERY_STRING", "")
    seconds = float(query.split("=", 1)[1]) if query.startswith("seconds=") else 0.5
    time.sleep(seconds)
    body = f"slept {seconds} in {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def burn(environ, start_response):
    """Uses ?seconds (default 0.2) of CPU time, then answers with its pid."""
    query = environ.get("QUERY_STRING", "")
    seconds = float(query.split("=", 1)[1]) if query.startswith("seconds=") else 0.2
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def crash(environ, start_response):
    raise RuntimeError("the application failed on purpose")


def noisy(environ, start_response):
    """Writes to stdout and stderr as careless applications do, and from a dying thread."""
    import sys
    import threading

    tag = environ.get("QUERY_STRING", "")
    print(f"print to stdout {tag}")
    print(f"print to stderr {tag}", file=sys.stderr)
    os.write(2, f"raw write to fd 2 {tag}\n".encode())

    def die():
        raise RuntimeError(f"thread died {tag}")

    thread = threading.Thread(target=die)
    thread.start()
    thread.join()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"noisy"]


_hoard: list[bytearray] = []


def hog(environ, start_response):
    """Keeps ?mb=N (default 64) MiB of touched memory for the life of the process."""
    query = environ.get("QUERY_STRING", "")
    megabytes = int(query.split("=", 1)[1]) if query.startswith("mb=") else 64
    _hoard.append(bytearray(b"x" * (megabytes << 20)))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"pid={os.getpid()}".encode()]


def gate(environ, start_response):
    """Holds the request until the file ?path=... exists (at most 30 s), then answers with its
    pid; it creates `path`.in on entry, so a test knows the request is being processed."""
    path = environ.get("QUERY_STRING", "").partition("path=")[2]
    open(path + ".in", "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    body = f"released in {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def inherited(environ, start_response):
    """What the serving child got from its parent: frozen objects, and prometheus_client?"""
    import gc
    import sys

    body = (
        f"frozen={gc.get_freeze_count()} prometheus={'prometheus_client' in sys.modules}"
    ).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def whoami(environ, start_response):
    """The process's uid, gid and groups, and whether it may append to ?path (a file)."""
    query = environ.get("QUERY_STRING", "")
    path = query.split("=", 1)[1] if query.startswith("path=") else ""
    try:
        with open(path, "a") as file:
            file.write("written by the application\n")
        wrote = "wrote"
    except PermissionError:
        wrote = "denied"
    groups = ",".join(str(g) for g in sorted(os.getgroups()))
    body = f"{os.getuid()} {os.getgid()} {groups} {wrote}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def addresses(environ, start_response):
    """The connection's addresses as the application sees them (JSON), and the serving pid."""
    import json

    keys = ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "SERVER_ADDR")
    facts = {key: environ.get(key) for key in keys}
    facts["pid"] = os.getpid()
    body = json.dumps(facts).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
