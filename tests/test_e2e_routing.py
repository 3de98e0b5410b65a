"""URL mapping through the real server, in Apache's phase order, and what rides on it.

An application mounted at `/` (Django's mod_wsgi layout) must not hide an `Alias`, whatever
the order of the directives: mod_alias maps before mod_wsgi, the DocumentRoot comes last, and
a `<Location>` `SetHandler` overrides the mapping. `Alias /static/ /srv/static/` (Django's
form, trailing slashes) maps `/static/x` to `/srv/static/x`. Beside the mapping: chunked
request bodies reach Flask (wsgi.input_terminated), HEAD on a streamed response has GET's
headers, and `Require host` grants or refuses by the client's double-reverse name.
"""

from __future__ import annotations

import json

import pytest

from mpmd.handlers.router import ReverseDns
from server import Server, call, wait_for
from test_e2e_http import Wire

SCRIPT = """\
def application(environ, start_response):
    body = ("app " + environ["SCRIPT_NAME"] + "|" + environ["PATH_INFO"]).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""
LOCAL_NAME = ReverseDns().name_of("127.0.0.1")  # "localhost" on a usual /etc/hosts
MOUNTS = {
    "script": 'WSGIScriptAlias / "{tmp}/site.wsgi"\n',
    "app": "WSGIApp / e2eapp:noread\n",
}


@pytest.fixture(scope="module", params=list(MOUNTS))
def site(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    (tmp / "site.wsgi").write_text(SCRIPT)
    (tmp / "static" / "css").mkdir(parents=True)
    (tmp / "static" / "css" / "site.css").write_text("body {}\n")
    (tmp / "media").mkdir()
    (tmp / "media" / "photo.txt").write_text("photo\n")
    (tmp / "htdocs").mkdir()
    (tmp / "htdocs" / "static").mkdir()  # the DocumentRoot must not win either
    (tmp / "htdocs" / "static" / "doc.txt").write_text("from the docroot\n")
    config = (
        f'Alias /media "{tmp}/media"\n'
        + MOUNTS[request.param].format(tmp=tmp)
        + f'Alias /static/ "{tmp}/static/"\n'  # after the mount: the file order does not matter
        + "WSGIApp /flask e2e_flaskapp:app\n"
        + "<Location /server-status>\n    SetHandler server-status\n</Location>\n"
        + f"<Location /host-granted>\n    Require host {LOCAL_NAME or 'localhost'}\n</Location>\n"
        + "<Location /host-denied>\n    Require host no-such-name.invalid\n</Location>\n"
    )
    server = Server(tmp, config, args=("-X",))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def is_app(body: bytes) -> bool:
    return body.startswith((b"app ", b"GET "))  # site.wsgi or e2eapp:noread


def test_alias_beside_an_app_at_root(site: Server) -> None:
    status, headers, body = call(site, "GET", "/static/css/site.css")
    assert (status, body) == (200, b"body {}\n")
    assert headers["Content-Type"].startswith("text/css") and "ETag" in headers
    assert call(site, "GET", "/media/photo.txt")[2] == b"photo\n"
    assert call(site, "GET", "/static/missing.css")[0] == 404  # the Alias, not the app
    assert call(site, "GET", "/static/doc.txt")[0] == 404  # nor the DocumentRoot
    for path in ("/", "/page", "/static", "/mediax/photo.txt", "/flaskx"):
        status, _, body = call(site, "GET", path)
        assert status == 200 and is_app(body), (path, body)
    assert call(site, "GET", "/flask/")[2] == b"flask index"  # the longer mount wins


def test_alias_with_trailing_slash_needs_it_in_the_url(tmp_path) -> None:
    """`Alias /static/ …/static/` maps `/static/x` to `…/static/x`; `/static` is not the Alias."""
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("body {}\n")
    (tmp_path / "htdocs").mkdir()
    (tmp_path / "htdocs" / "static").mkdir()
    (tmp_path / "htdocs" / "static" / "doc.txt").write_text("from the docroot\n")
    config = f'Alias /static/ "{tmp_path}/static/"\nAlias /css "{tmp_path}/static"\n'
    with Server(tmp_path, config, args=("-X",)) as server:
        assert call(server, "GET", "/static/site.css")[:3:2] == (200, b"body {}\n")
        assert call(server, "GET", "/css/site.css")[:3:2] == (200, b"body {}\n")
        assert call(server, "GET", "/static//site.css")[:3:2] == (200, b"body {}\n")
        assert call(server, "GET", "/static/doc.txt")[0] == 404
        status, headers, _ = call(server, "GET", "/static")  # the DocumentRoot's directory
        assert status == 301 and headers["Location"].endswith("/static/")


def test_location_sethandler_beside_an_app_at_root(site: Server) -> None:
    status, _, body = call(site, "GET", "/server-status?auto")
    assert status == 200 and b"Scoreboard: " in body, body


def test_chunked_request_body_reaches_flask(site: Server) -> None:
    """Werkzeug reads a body without Content-Length only when wsgi.input_terminated is set."""
    payload = {"items": list(range(2000)), "name": "chunked"}
    data = json.dumps(payload).encode()
    pieces = iter([data[:10], data[10:5000], data[5000:]])
    status, _, body = call(
        site,
        "POST",
        "/flask/echo",
        body=pieces,
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    assert status == 200, body
    assert json.loads(body) == {"received": payload}


def test_head_of_a_streamed_response_has_the_get_headers(site: Server) -> None:
    """GET is chunked without a length; HEAD must not announce `Content-Length: 0`."""
    wire = Wire.connect(site.port)
    try:
        wire.send(b"GET /flask/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        got = wire.response()
        assert got.status == 200 and got.chunked and got.body == b"part 0\npart 1\npart 2\n"
        assert got.header("content-length") is None
        wire.send(b"HEAD /flask/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        head = wire.response("HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("content-length") is None, head.headers
        assert head.header("content-type") == got.header("content-type")
        wire.send(b"GET /flask/ HTTP/1.1\r\nHost: x\r\n\r\n")  # the connection stays usable
        assert wire.response().body == b"flask index"
    finally:
        wire.close()


@pytest.mark.skipif(LOCAL_NAME is None, reason="127.0.0.1 has no double-reverse name here")
def test_require_host_by_double_reverse_name(site: Server) -> None:
    status, _, body = call(site, "GET", "/host-granted/x")
    assert status == 200 and is_app(body), body
    status, _, body = call(site, "GET", "/host-denied/x")
    assert status == 403 and not is_app(body)
    wait_for(lambda: "AH01630" in site.log_text())
    assert "client denied by server configuration" in site.log_text()
