"""A test fault: mounted as a WSGIApp, importing this module plants a bug in two handlers that
are not WSGI applications, so a test can see how the real server treats such a bug.

The static handler raises for a file named `fault.txt`, the status handler for a query with
`fault` in it; every other request is served as usual.
"""

from __future__ import annotations

from mpmd.handlers import static, status

_serve = static.StaticFiles.serve
_parse_query = status.parse_query


def _faulty_serve(self, exchange, root, fs_path, url_path, settings):
    if fs_path.endswith("/fault.txt"):
        raise RuntimeError("a static handler bug on purpose")
    return _serve(self, exchange, root, fs_path, url_path, settings)


def _faulty_parse_query(query):
    if "fault" in query:
        raise RuntimeError("a status handler bug on purpose")
    return _parse_query(query)


static.StaticFiles.serve = _faulty_serve
status.parse_query = _faulty_parse_query


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"faults planted"]
