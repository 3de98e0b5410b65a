"""Shows what a WSGI application learns of its client behind mod_remoteip (tests)."""

import json


def application(environ, start_response):
    body = json.dumps(
        {
            "REMOTE_ADDR": environ["REMOTE_ADDR"],
            "REMOTE_PORT": environ["REMOTE_PORT"],
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
            "forwarded_by": environ.get("HTTP_X_FORWARDED_BY"),
        }
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
