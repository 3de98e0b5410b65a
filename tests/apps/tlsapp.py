"""A WSGI app for the TLS tests: answers with the TLS part of its environ as JSON."""

import json


def application(environ, start_response):
    shown = {k: v for k, v in environ.items() if k.startswith(("SSL_", "HTTPS"))}
    shown["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
    shown["SERVER_NAME"] = environ["SERVER_NAME"]
    body = json.dumps(shown, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
