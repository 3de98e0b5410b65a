"""WsgiHandler against PEP 3333: environ, start_response, write(), file_wrapper, errors.

No sockets: the Exchange writes into a list, sendfile reads the descriptor with os.pread, and
the bytes are parsed back into a response (the fakes and builders are in tests/helpers.py).
"""

from __future__ import annotations

import io
import sys
import timeit
import wsgiref.validate

import pytest

from helpers import BytesBody, FakeErrorLog, Sink, make_exchange, make_request, parse_response
from mpmd.config.model import WsgiMount
from mpmd.handlers.wsgi import FileWrapper, WsgiHandler, load_wsgi_app
from mpmd.http.exchange import ConnectionInfo, Exchange
from mpmd.http.request import Request

# -- running an app -------------------------------------------------------------------------


def run_app(app, request: Request, *, mount_path: str = "", validate: bool = True, sink=None):
    """Run `app` through a WsgiHandler; returns (response, error log, exchange, sink)."""
    log = FakeErrorLog()
    mount = WsgiMount(mount_path, "tests:app", "app")
    handler = WsgiHandler(
        wsgiref.validate.validator(app) if validate else app, mount, error_log=log
    )
    exchange, sink = make_exchange(request, sink=sink)
    handler(exchange, request.path[len(mount_path) :])
    if exchange.status:
        exchange.finish()
    head_only = request.method == "HEAD"
    return parse_response(sink.data, head_only=head_only), log, exchange, sink


# -- apps ---------------------------------------------------------------------------------------


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def echo_app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


# -- environ ------------------------------------------------------------------------------------


def test_environ_per_connection_part_is_shared_but_never_leaks_between_requests():
    """The connection's values are built once per connection and mount, and each request gets
    its own copy: what an app writes into its environ is not seen by the next request."""
    seen = []

    def app(environ, start_response):
        seen.append((environ["SCRIPT_NAME"], environ["REMOTE_ADDR"], environ["PATH_INFO"]))
        environ["REMOTE_ADDR"] = "203.0.113.9"
        environ["mine"] = True
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    log = FakeErrorLog()
    first = WsgiHandler(app, WsgiMount("/a", "tests:a", "app"), error_log=log)
    second = WsgiHandler(app, WsgiMount("/b", "tests:b", "app"), error_log=log)
    exchange, _ = make_exchange(make_request("GET", "/a/1"))
    conn = exchange.conn
    for handler, path in ((first, "/a/1"), (first, "/a/2"), (second, "/b/3"), (first, "/a/4")):
        exchange = Exchange(make_request("GET", path), conn, None, Sink().send, None)
        handler(exchange)
        assert exchange.status == 200
    assert seen == [
        ("/a", "10.0.0.7", "/1"),
        ("/a", "10.0.0.7", "/2"),
        ("/b", "10.0.0.7", "/3"),
        ("/a", "10.0.0.7", "/4"),
    ]


def test_environ_has_every_cgi_and_wsgi_key():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("204 No Content", [])
        return []

    request = make_request(
        "POST",
        "/app/a%20b/c?x=1&y=2",
        [
            ("host", "Example.COM:8080"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x_evil", "dropped"),
            ("user-agent", "t"),
        ],
        b"abc",
    )
    response, log, _, _ = run_app(app, request, mount_path="/app", validate=False)
    assert response.status == 204, log.text()
    env = seen
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/a%20b/c"  # the router decodes; here the raw rest is passed
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["REQUEST_URI"] == "/app/a%20b/c?x=1&y=2"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "8080"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "10.0.0.7" and env["REMOTE_PORT"] == "50123"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1, 2.2.2.2"
    assert "HTTP_X_EVIL" not in env
    assert env["HTTP_USER_AGENT"] == "t"
    assert env["SERVER_SOFTWARE"].startswith("mpmd/")
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.input"] is request.body


def test_non_ascii_path_info_is_latin1_of_the_bytes():
    seen = {}

    def app(environ, start_response):
        seen["path"] = environ["PATH_INFO"]
        start_response("200 OK", [])
        return []

    raw = "/caf\u00e9".encode().decode("latin-1")  # what the router hands over
    request = make_request("GET", "/x")
    log = FakeErrorLog()
    handler = WsgiHandler(app, WsgiMount("", "m:app", "app"), error_log=log)
    exchange, _ = make_exchange(request)
    handler(exchange, raw)
    assert seen["path"].encode("latin-1").decode("utf-8") == "/caf\u00e9"


# -- responses through the validator ------------------------------------------------------------


def test_get_hello_through_validator():
    response, log, exchange, _ = run_app(hello_app, make_request())
    assert response.status == 200
    assert response.body == b"Hello, world!"
    assert response.header("Content-Type") == "text/plain"
    assert exchange.keep_alive
    assert not log.lines


def test_hello_fast_path_sends_once_with_content_length():
    response, _, _, sink = run_app(hello_app, make_request(), validate=False)
    assert len(sink.chunks) == 1
    assert response.header("Content-Length") == "13"


def test_large_single_body_is_sent_after_the_head_not_copied_behind_it():
    """A small body rides in the head's send; a large one is its own send, never copied."""
    big = b"x" * 100_000

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [big]

    response, _, _, sink = run_app(app, make_request(), validate=False)
    assert len(sink.chunks) == 2 and sink.chunks[1] is big
    assert response.header("Content-Length") == "100000" and response.body == big


def test_date_header_is_the_request_time():
    """Apache's Date is r->request_time (the head was read), not the clock when it is sent:
    the exchange's start time serves, with no clock read of its own."""
    exchange, sink = make_exchange(make_request())
    exchange.start_time = 1_700_000_000.5  # Tue, 14 Nov 2023 22:13:20 GMT
    WsgiHandler(hello_app, WsgiMount("", "x", "app"), error_log=FakeErrorLog())(exchange, "/")
    exchange.finish()
    assert parse_response(sink.data).header("date") == "Tue, 14 Nov 2023 22:13:20 GMT"


def test_post_sized_body_through_validator():
    response, log, _, _ = run_app(echo_app, make_request("POST", "/", body=b"x=1&y=" + b"z" * 5000))
    assert response.status == 200, log.text()
    assert response.body == b"x=1&y=" + b"z" * 5000


def test_post_chunked_body_through_validator():
    def app(environ, start_response):
        assert "CONTENT_LENGTH" not in environ
        lines = list(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d lines: " % len(lines), b"".join(lines)]

    body = BytesBody(b"one\ntwo\nthree")
    response, log, _, _ = run_app(app, make_request("POST", "/", body=body, chunked=True))
    assert response.status == 200, log.text()
    assert response.body == b"3 lines: one\ntwo\nthree"


def test_streaming_response_is_chunked_for_http11():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(5))

    response, log, _, _ = run_app(app, make_request())
    assert response.header("Transfer-Encoding") == "chunked", log.text()
    assert response.body == b"part0;part1;part2;part3;part4;"


def test_streaming_response_is_close_delimited_for_http10():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b"])

    response, _, exchange, _ = run_app(app, make_request(version="HTTP/1.0"))
    assert response.body == b"ab"
    assert not exchange.keep_alive


def test_write_callable_then_iterable():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        write(b"abc")
        write(b"def")
        return [b"ghi"]

    response, log, _, _ = run_app(app, make_request())
    assert response.body == b"abcdefghi", log.text()


def test_empty_iterable_gets_content_length_zero():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    response, _, _, _ = run_app(app, make_request())
    assert response.header("Content-Length") == "0"
    assert response.body == b""


def test_head_has_headers_but_no_body():
    response, log, _, _ = run_app(hello_app, make_request("HEAD"))
    assert response.status == 200, log.text()
    response, _, _, _ = run_app(hello_app, make_request("HEAD"), validate=False)
    assert response.header("Content-Length") == "13"


def test_file_wrapper_through_validator_iterates(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 100)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(path, "rb"), 4096)

    response, log, _, _ = run_app(app, make_request())
    assert response.body == path.read_bytes(), log.text()


def test_file_wrapper_uses_sendfile_from_current_position(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"0123456789" * 1000)
    opened = []

    def app(environ, start_response):
        handle = open(path, "rb")  # noqa: SIM115 - the handler must close it
        handle.seek(10)
        opened.append(handle)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](handle)

    response, _, _, sink = run_app(app, make_request(), validate=False)
    assert sink.sendfile_calls == [(10, 9990)]
    assert response.header("Content-Length") == "9990"
    assert response.body == path.read_bytes()[10:]
    assert opened[0].closed


def test_file_wrapper_over_bytesio_iterates_blocks():
    def app(environ, start_response):
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 10000), 1000)

    response, _, _, sink = run_app(app, make_request(), validate=False)
    assert sink.sendfile_calls == []
    assert response.body == b"x" * 10000


# -- errors -------------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_before_headers_is_500_with_traceback_in_log_only():
    def app(environ, start_response):
        raise Boom("secret detail")

    response, log, exchange, _ = run_app(app, make_request())
    assert response.status == 500
    assert b"secret detail" not in response.body and b"Traceback" not in response.body
    assert "Traceback" in log.text() and "secret detail" in log.text()
    assert not exchange.keep_alive


def test_exception_during_iteration_before_body_is_500_and_close_called():
    closed = []

    class Result:
        def __iter__(self):
            raise Boom("in iteration")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Result()

    response, log, _, _ = run_app(app, make_request(), validate=False)
    assert response.status == 500
    assert closed == [True]
    assert "in iteration" in log.text()


def test_exception_after_headers_closes_connection():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first"
        raise Boom("late")

    log = FakeErrorLog()
    handler = WsgiHandler(wsgiref.validate.validator(app), WsgiMount("", "x", "app"), error_log=log)
    exchange, sink = make_exchange(make_request())
    handler(exchange)
    assert exchange.head_sent and not exchange.keep_alive
    assert b"first" in sink.data and b"late" not in sink.data
    assert "late" in log.text()


def test_exc_info_replaces_status_before_head():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise Boom("x")
        except Boom:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"sorry"]

    response, log, _, _ = run_app(app, make_request())
    assert response.status == 503, log.text()
    assert response.body == b"sorry"


def test_exc_info_after_head_reraises_and_closes():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"sent")
        try:
            raise Boom("after head")
        except Boom:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"never"]

    log = FakeErrorLog()
    handler = WsgiHandler(app, WsgiMount("", "x", "app"), error_log=log)
    exchange, sink = make_exchange(make_request())
    handler(exchange)
    assert not exchange.keep_alive
    assert b"never" not in sink.data
    assert "after head" in log.text()


def test_client_gone_calls_close_and_drops_keep_alive():
    closed = []

    class Result:
        def __iter__(self):
            yield b"a" * 10
            yield b"b" * 10
            yield b"c" * 10

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [])
        return Result()

    log = FakeErrorLog()
    handler = WsgiHandler(app, WsgiMount("", "x", "app"), error_log=log)
    exchange, _ = make_exchange(make_request(), sink=Sink(fail_after_sends=1))
    handler(exchange)
    assert closed == [True]
    assert exchange.aborted and not exchange.keep_alive


def test_client_gone_during_write_is_not_an_app_error():
    def app(environ, start_response):
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one")
        write(b"two")
        return []

    log = FakeErrorLog()
    handler = WsgiHandler(app, WsgiMount("", "x", "app"), error_log=log)
    exchange, _ = make_exchange(make_request(), sink=Sink(fail_after_sends=1))
    handler(exchange)
    assert exchange.aborted and not exchange.keep_alive
    assert [level for level, _, _ in log.lines] == ["info"]
    assert "Traceback" not in log.text()


def test_app_oserror_while_iterating_is_500():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield from ()
        raise FileNotFoundError(2, "No such file", "/missing")

    response, log, exchange, _ = run_app(app, make_request())
    assert response.status == 500 and not exchange.aborted
    assert "Traceback" in log.text()


@pytest.mark.parametrize("status", [400, 408, 413])
def test_http_error_from_input_becomes_that_status(status):
    def app(environ, start_response):
        environ["wsgi.input"].read(10)
        environ["wsgi.input"].read(10)
        start_response("200 OK", [])
        return [b"no"]

    body = BytesBody(b"y" * 100, fail_after=10, status=status)
    response, log, exchange, _ = run_app(app, make_request("POST", "/", body=body, chunked=True))
    assert response.status == status
    assert not exchange.keep_alive
    assert log.lines


def test_app_without_start_response_is_500():
    def app(environ, start_response):
        return [b"oops"]

    response, log, _, _ = run_app(app, make_request(), validate=False)
    assert response.status == 500
    assert "start_response" in log.text()


# -- Flask ----------------------------------------------------------------------------------------


def test_flask_routes():
    flask = pytest.importorskip("flask")
    app = flask.Flask("mpmd_test")

    @app.route("/")
    def index():
        return "index"

    @app.route("/items/<int:item>", methods=["GET", "POST"])
    def item(item):
        if flask.request.method == "POST":
            return flask.jsonify(item=item, data=flask.request.get_data(as_text=True)), 201
        return flask.jsonify(item=item, q=flask.request.args.get("q"))

    @app.route("/fail")
    def fail():
        raise RuntimeError("flask boom")

    app.config["PROPAGATE_EXCEPTIONS"] = True

    response, _, _, _ = run_app(
        app, make_request("GET", "/shop/", [("host", "h")]), mount_path="/shop"
    )
    assert (response.status, response.body) == (200, b"index")
    response, _, _, _ = run_app(
        app, make_request("GET", "/shop/items/7?q=z", [("host", "h")]), mount_path="/shop"
    )
    assert response.status == 200 and b'"item":7' in response.body and b'"q":"z"' in response.body
    # Werkzeug reads a terminated wsgi.input with read() and no size, which the validator refuses.
    response, _, _, _ = run_app(
        app,
        make_request("POST", "/shop/items/3", [("host", "h")], b"payload"),
        mount_path="/shop",
        validate=False,
    )
    assert response.status == 201 and b'"data":"payload"' in response.body
    response, _, _, _ = run_app(
        app, make_request("GET", "/shop/nope", [("host", "h")]), mount_path="/shop"
    )
    assert response.status == 404
    response, log, _, _ = run_app(
        app, make_request("GET", "/shop/fail", [("host", "h")]), mount_path="/shop"
    )
    assert response.status == 500 and b"flask boom" not in response.body
    assert "flask boom" in log.text()


# -- loading ------------------------------------------------------------------------------------


def test_load_script_and_module(tmp_path):
    script = tmp_path / "site.wsgi"
    script.write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from script']\n"
    )
    app = load_wsgi_app(WsgiMount("/s", str(script), "script"), [])
    response, _, _, _ = run_app(app, make_request("GET", "/s"), mount_path="/s")
    assert response.body == b"from script"

    (tmp_path / "mpmd_factory_mod.py").write_text(
        "def make():\n"
        "    def app(environ, start_response):\n"
        "        start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "        return [b'from factory']\n"
        "    return app\n"
    )
    app = load_wsgi_app(WsgiMount("", "mpmd_factory_mod:make()", "app"), [str(tmp_path)])
    response, _, _, _ = run_app(app, make_request())
    assert response.body == b"from factory"


# -- speed (reported, never asserted) ---------------------------------------------------------


def test_hello_world_cost_is_measurable(capsys):
    handler = WsgiHandler(hello_app, WsgiMount("", "x", "app"), error_log=FakeErrorLog())
    conn = ConnectionInfo("127.0.0.1", 5000, "127.0.0.1", 80, multithread=False, multiprocess=True)
    headers = [("host", "localhost"), ("user-agent", "wrk"), ("accept", "*/*")]
    sent: list[bytes] = []

    def one() -> None:
        request = Request("GET", "/", "HTTP/1.1", headers, BytesBody(), keep_alive=True)
        exchange = Exchange(request, conn, None, sent.append, None)  # type: ignore[arg-type]
        handler(exchange, "/")
        exchange.finish()
        sent.clear()

    runs = 2000
    seconds = min(timeit.repeat(one, number=runs, repeat=3))
    with capsys.disabled():
        print(f"\nWsgiHandler hello world: {seconds / runs * 1e6:.1f} us/request")
    assert seconds > 0
