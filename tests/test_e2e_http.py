"""The HTTP engine end to end: the real `mpmd` process, raw sockets, Apache's statuses.

Every case file of tests/protocol_cases (see test_protocol.py for the format) is sent to a
running server whole, byte by byte and in seeded random splits; the server answers with the
expected status per request, in order, with `Connection: close` on errors, and keeps or
closes the connection as the case says. Then the limits at their real defaults, smuggling,
pipelining, HTTP/1.0 keep-alive, Expect, HEAD, MaxKeepAliveRequests, KeepAliveTimeout and
RequestReadTimeout, each followed by a normal request (the bad client killed no worker).
`-X` (one process) runs everything; prefork, worker and event run the cheaper checks.
"""

from __future__ import annotations

import codecs
import json
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from server import Server

CASES = Path(__file__).parent / "protocol_cases"
CASE_FILES = sorted(CASES.glob("*/*.http"))
APP_CONFIG = "WSGIApp / e2eapp:probe\n"
NOREAD_CONFIG = "WSGIApp / e2eapp:noread\n"
# HttpSettings field (as a case file names it) -> the directive that sets it.
DIRECTIVES = {
    "limit_request_body": "LimitRequestBody",
    "limit_request_field_size": "LimitRequestFieldSize",
    "limit_request_line": "LimitRequestLine",
    "limit_request_fields": "LimitRequestFields",
    "max_keep_alive_requests": "MaxKeepAliveRequests",
    "keep_alive": "KeepAlive",
}
PROBE = b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n"  # fits every limit the cases set
PROBE_BODY = b"GET /p HTTP/1.1\n"  # what e2eapp:probe answers to PROBE
READ_TIMEOUT = 5.0


# -- a raw HTTP/1.x client -------------------------------------------------------------------


class Response:
    """One parsed response: status, lower-cased headers in order, the body as received."""

    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]]):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""
        self.chunked = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def closes(self) -> bool:
        return "close" in (self.header("connection") or "").lower()

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


class Wire:
    """Reads responses off a raw socket; every read is bounded by READ_TIMEOUT."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.interim: list[Response] = []  # 1xx responses seen before final ones

    @classmethod
    def connect(cls, port: int) -> Wire:
        sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def send(self, data: bytes) -> bool:
        """Send; False if the server already closed (it may answer and close mid-request)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, marker: bytes) -> bytes:
        while True:
            end = self.buf.find(marker)
            if end >= 0:
                data = bytes(self.buf[: end + len(marker)])
                del self.buf[: end + len(marker)]
                return data
            if not self._fill():
                raise EOFError(f"closed before {marker!r}; have {bytes(self.buf)!r}")

    def _exact(self, count: int) -> bytes:
        while len(self.buf) < count:
            if not self._fill():
                raise EOFError(f"closed after {len(self.buf)} of {count} body bytes")
        data = bytes(self.buf[:count])
        del self.buf[:count]
        return data

    def response(self, method: str = "GET") -> Response:
        """The next final response (1xx are kept in `interim`), body framed as HTTP says."""
        while True:
            head = self._until(b"\r\n\r\n").decode("latin-1")
            lines = head[:-4].split("\r\n")
            version, status, reason = ([*lines[0].split(" ", 2), ""])[:3]
            headers = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip()))
            resp = Response(version, int(status), reason, headers)
            if 100 <= resp.status < 200:
                self.interim.append(resp)
                continue
            break
        if method == "HEAD" or resp.status in (204, 304):
            return resp
        length = resp.header("content-length")
        if "chunked" in (resp.header("transfer-encoding") or ""):
            resp.chunked = True
            parts = []
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._until(b"\r\n")  # no trailers from mpmd
                    break
                parts.append(self._exact(size))
                self._exact(2)
            resp.body = b"".join(parts)
        elif length is not None:
            resp.body = self._exact(int(length))
        else:
            while self._fill():
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    def closed_by_server(self, timeout: float = READ_TIMEOUT) -> bool:
        """True if the server closes with nothing more to say (stray bytes fail the test)."""
        self.sock.settimeout(timeout)
        try:
            while self._fill():
                pass
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(READ_TIMEOUT)
        assert not self.buf, f"unexpected bytes before close: {bytes(self.buf)!r}"
        return True


def exchange(port: int, data: bytes, method: str = "GET") -> Response:
    """One request on a fresh connection."""
    wire = Wire.connect(port)
    try:
        wire.send(data)
        return wire.response(method)
    finally:
        wire.close()


def assert_serves(port: int) -> None:
    """The server still answers normally (the bad client before this did not break it)."""
    resp = exchange(port, PROBE)
    assert resp.status == 200, resp
    assert resp.body.startswith(b"GET /p"), resp  # probe or noread


def get(path: str, *, version: str = "1.1", extra: str = "") -> bytes:
    return f"GET {path} HTTP/{version}\r\nHost: example.com\r\n{extra}\r\n".encode()


# -- servers ----------------------------------------------------------------------------------


class ServerPool:
    """Servers started on demand for a test module, one per configuration, all stopped at end."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.servers: dict[tuple[str, tuple[str, ...]], Server] = {}

    def get(self, config: str, args: tuple[str, ...] = ("-X",)) -> Server:
        key = (config, args)
        if key not in self.servers:
            server = Server(self.factory.mktemp("e2e"), config, args=args)
            self.servers[key] = server  # registered first, so a failed start is still stopped
            server.start()
        server = self.servers[key]
        assert server.proc.poll() is None, f"server died: {server.output()}\n{server.log_text()}"
        return server

    def stop(self) -> None:
        """Stop them all at once: each stop waits for its own tree's shutdown."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.servers))) as executor:
            list(executor.map(Server.stop, self.servers.values()))


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    servers = ServerPool(tmp_path_factory)
    yield servers
    servers.stop()


MODES = {
    "X": ("-X",),
    "prefork": ("--mpm", "prefork"),
    "worker": ("--mpm", "worker"),
    "event": ("--mpm", "event"),
}
SMALL_POOLS = """\
StartServers 1
MinSpareServers 1
MaxSpareServers 2
MinSpareThreads 1
MaxSpareThreads 8
ThreadsPerChild 4
"""


def server_for(pool: ServerPool, mode: str, config: str = APP_CONFIG) -> Server:
    args = MODES[mode]
    return pool.get(config if mode == "X" else SMALL_POOLS + config, args)


# -- the case files ---------------------------------------------------------------------------


def load_case(path: Path) -> tuple[dict, bytes]:
    first, _, rest = path.read_bytes().partition(b"\n")
    expected = json.loads(first[2:])
    return expected, codecs.escape_decode(rest.replace(b"\n", b""))[0]


def case_config(expected: dict) -> str:
    lines = [NOREAD_CONFIG if expected.get("read_body", True) is False else APP_CONFIG]
    for key, value in sorted(expected.get("settings", {}).items()):
        if isinstance(value, bool):
            value = "On" if value else "Off"
        lines.append(f"{DIRECTIVES[key]} {value}\n")
    return "".join(lines)


def random_splits(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def check_case(port: int, name: str, expected: dict, pieces: list[bytes], pace: float) -> None:
    """Send `pieces`, then check each expected response and the connection's fate."""
    wire = Wire.connect(port)
    try:
        for index, piece in enumerate(pieces):
            if index and pace:
                time.sleep(pace)  # pacing the client, so the server reads the pieces apart
            if not wire.send(piece):
                break
        if "_at_eof" in name:
            wire.sock.shutdown(socket.SHUT_WR)  # the case is about the client closing early
        noread = expected.get("read_body", True) is False
        for event in expected["events"]:
            if "error" in event:
                resp = wire.response()
                assert resp.status == event["error"], (event, resp)
                assert resp.closes != event["keep_alive"], (event, resp)
                continue
            method, target, _version = event["request"].split(" ")
            resp = wire.response(method)
            if "body_error" in event:
                assert resp.status == event["body_error"], (event, resp)
                assert resp.closes, resp
                continue
            assert resp.status == 200, (event, resp)
            assert resp.closes != event["keep_alive"], (event, resp)
            if method == "HEAD":
                assert resp.body == b""
            elif target == "*":  # OPTIONS * is the server's own answer, as in Apache
                assert resp.header("allow") and resp.body == b"", resp
            elif noread:
                assert resp.body == f"{method} {target}\n".encode("latin-1")
            else:
                body = event.get("body", "")
                assert resp.body == f"{event['request']}\n{body}".encode("latin-1"), event
        if "continue_sent" in expected:
            assert len(wire.interim) == expected["continue_sent"], wire.interim
        if expected["open"]:
            wire.send(PROBE)
            resp = wire.response()
            assert (resp.status, resp.body) == (200, b"GET /p\n" if noread else PROBE_BODY)
        else:
            assert wire.closed_by_server(), "the server kept the connection open"
    finally:
        wire.close()


def _case_param(path: Path):
    return pytest.param(path, id=f"{path.parent.name}/{path.stem}")


@pytest.mark.parametrize("path", [_case_param(path) for path in CASE_FILES])
def test_case_over_socket(pool: ServerPool, path: Path) -> None:
    expected, data = load_case(path)
    server = pool.get(case_config(expected))
    log_before = len(server.log_text())
    check_case(server.port, path.stem, expected, [data], 0)
    check_case(server.port, path.stem, expected, [bytes([b]) for b in data], 0)
    for seed in range(3):
        check_case(server.port, path.stem, expected, random_splits(data, seed), 0.002)
    assert_serves(server.port)
    assert server.proc.poll() is None
    new_log = server.log_text()[log_before:]
    assert "Traceback" not in new_log, new_log


def test_case_folders_are_used() -> None:
    assert len(CASE_FILES) >= 75
    assert all(case_config(load_case(path)[0]) for path in CASE_FILES)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["prefork", "worker", "event"])
def test_cases_whole_under_each_mpm(pool: ServerPool, mode: str) -> None:
    """The same files, sent whole, to the blocking (prefork, worker) and threaded event paths."""
    for path in CASE_FILES:
        expected, data = load_case(path)
        server = server_for(pool, mode, case_config(expected))
        check_case(server.port, path.stem, expected, [data], 0)
    for server in pool.servers.values():
        assert_serves(server.port)


# -- limits at their real values ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["X", "prefork"])
def test_limits_at_apache_defaults(pool: ServerPool, mode: str) -> None:
    """414 past 8190 request-line bytes, 400 past 8190 field bytes or 100 fields; 413 body."""
    port = server_for(pool, mode, APP_CONFIG + "LimitRequestBody 1000\n").port
    fits = "/" + "a" * (8190 - len("GET / HTTP/1.1"))
    assert exchange(port, get(fits)).status == 200
    too_long = exchange(port, get(fits + "a"))
    assert (too_long.status, too_long.closes) == (414, True)
    field = "X-F: " + "b" * (8190 - 5)
    assert exchange(port, get("/", extra=field + "\r\n")).status == 200
    big = exchange(port, get("/", extra=field + "b\r\n"))
    assert (big.status, big.closes) == (400, True)
    fields = "".join(f"X-{i}: v\r\n" for i in range(99))  # + Host = 100, Apache's limit
    assert exchange(port, get("/", extra=fields)).status == 200
    many = exchange(port, get("/", extra=fields + "X-99: v\r\n"))
    assert (many.status, many.closes) == (400, True)
    post = "POST / HTTP/1.1\r\nHost: x\r\n{}\r\n"
    declared = exchange(port, post.format("Content-Length: 1001\r\n").encode() + b"z" * 1001)
    assert (declared.status, declared.closes) == (413, True)
    exact = exchange(port, post.format("Content-Length: 1000\r\n").encode() + b"z" * 1000)
    assert exact.status == 200 and exact.body.endswith(b"z" * 1000)
    chunks = b"".join(b"1f4\r\n" + b"c" * 500 + b"\r\n" for _ in range(3)) + b"0\r\n\r\n"
    chunked = exchange(port, post.format("Transfer-Encoding: chunked\r\n").encode() + chunks)
    assert (chunked.status, chunked.closes) == (413, True)
    assert_serves(port)


@pytest.mark.parametrize("mode", ["X", "worker"])
def test_smuggling_content_length_with_transfer_encoding(pool: ServerPool, mode: str) -> None:
    """CL+TE in either order is refused with 400 and the connection closes: nothing smuggled."""
    port = server_for(pool, mode).port
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    for first, second in (
        ("Content-Length: 4", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 40"),
    ):
        head = f"POST / HTTP/1.1\r\nHost: x\r\n{first}\r\n{second}\r\n\r\n".encode()
        wire = Wire.connect(port)
        try:
            wire.send(head + b"0\r\n\r\n" + smuggled)
            resp = wire.response()
            assert (resp.status, resp.closes) == (400, True)
            assert wire.closed_by_server()  # /smuggled was never answered
        finally:
            wire.close()
    assert_serves(port)


@pytest.mark.parametrize("mode", ["X", "prefork", "event"])
def test_pipelined_requests_answered_in_order(pool: ServerPool, mode: str) -> None:
    port = server_for(pool, mode).port
    requests = []
    for i in range(12):
        if i % 3 == 1:
            body = f"body-{i}".encode()
            requests.append(
                f"POST /{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        elif i % 3 == 2:
            requests.append(
                f"PUT /{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                f"3\r\nabc\r\n0\r\n\r\n".encode()
            )
        else:
            requests.append(get(f"/{i}"))
    wire = Wire.connect(port)
    try:
        wire.send(b"".join(requests))
        for i in range(12):
            resp = wire.response()
            method = ("GET", "POST", "PUT")[i % 3]
            tail = ("", f"body-{i}", "abc")[i % 3]
            assert resp.status == 200
            assert resp.body == f"{method} /{i} HTTP/1.1\n{tail}".encode()
            assert "date" in dict(resp.headers) and dict(resp.headers)["server"].startswith("mpmd")
    finally:
        wire.close()


def test_http10_keep_alive(pool: ServerPool) -> None:
    """HTTP/1.0 keeps the connection only when asked, and says so in the response."""
    port = server_for(pool, "X").port
    wire = Wire.connect(port)
    try:
        for i in range(3):
            wire.send(get(f"/{i}", version="1.0", extra="Connection: keep-alive\r\n"))
            resp = wire.response()
            assert resp.version == "HTTP/1.0" and resp.body == f"GET /{i} HTTP/1.0\n".encode()
            assert (resp.header("connection") or "").lower() == "keep-alive"
        wire.send(get("/last", version="1.0"))
        assert wire.response().body == b"GET /last HTTP/1.0\n"
        assert wire.closed_by_server()
    finally:
        wire.close()


@pytest.mark.parametrize("mode", ["X", "prefork", "worker", "event"])
def test_expect_100_continue_then_response(pool: ServerPool, mode: str) -> None:
    """The client waits for 100 before sending the body; then the real response follows."""
    port = server_for(pool, mode).port
    wire = Wire.connect(port)
    try:
        wire.send(
            b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        assert wire._until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        wire.send(b"hello")
        resp = wire.response()
        assert (resp.status, resp.body) == (200, b"POST /up HTTP/1.1\nhello")
        # Any other expectation: 417, and the connection carries on.
        wire.send(get("/x", extra="Expect: something-else\r\n"))
        refused = wire.response()
        assert (refused.status, refused.closes) == (417, False)
        wire.send(PROBE)
        assert wire.response().body == PROBE_BODY
    finally:
        wire.close()


def test_head_has_get_headers_without_body(pool: ServerPool) -> None:
    port = server_for(pool, "X").port
    wire = Wire.connect(port)
    try:
        wire.send(get("/same") + b"HEAD /same HTTP/1.1\r\nHost: x\r\n\r\n" + PROBE)
        full = wire.response()
        head = wire.response("HEAD")
        assert head.status == full.status == 200
        # probe echoes the request line, so the lengths differ by the method's
        assert full.header("content-length") == str(len(full.body)) == "19"
        assert head.header("content-length") == str(len(b"HEAD /same HTTP/1.1\n"))
        assert head.header("content-type") == full.header("content-type")
        assert not head.closes
        assert wire.response().body == PROBE_BODY  # no stray body bytes between them
    finally:
        wire.close()


@pytest.mark.parametrize("mode", ["X", "worker"])
def test_max_keep_alive_requests(pool: ServerPool, mode: str) -> None:
    """Apache counts keep-alives after the first request: with 3, the 4th response closes."""
    port = server_for(pool, mode, APP_CONFIG + "MaxKeepAliveRequests 3\n").port
    wire = Wire.connect(port)
    try:
        for i in range(4):
            wire.send(get(f"/{i}"))
            resp = wire.response()
            assert resp.body == f"GET /{i} HTTP/1.1\n".encode()
            assert resp.closes == (i == 3), (i, resp)
        assert wire.closed_by_server()
    finally:
        wire.close()


# -- timeouts -----------------------------------------------------------------------------------

TIMEOUT_CONFIG = (
    APP_CONFIG + "KeepAliveTimeout 1\nRequestReadTimeout header=1-2,MinRate=500 body=1\n"
)


def closed_after(wire: Wire, limit: float = 5.0) -> float:
    """Seconds until the server closes the connection (fails if it is still open at `limit`)."""
    start = time.monotonic()
    assert wire.closed_by_server(limit), f"still open after {limit} s"
    return time.monotonic() - start


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["X", "prefork"])
def test_keep_alive_timeout_closes_idle_connection(pool: ServerPool, mode: str) -> None:
    port = server_for(pool, mode, TIMEOUT_CONFIG).port
    wire = Wire.connect(port)
    try:
        wire.send(PROBE)
        assert wire.response().body == PROBE_BODY
        assert 0.8 <= closed_after(wire) < 2.5
    finally:
        wire.close()
    assert_serves(port)


# (--mpm event runs the same loop as -X, so -X stands for both here, to keep the suite quick.)
READ_TIMEOUT_MODES = ["X", "prefork", "worker"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", READ_TIMEOUT_MODES)
def test_request_read_timeout_partial_headers_get_408(pool: ServerPool, mode: str) -> None:
    port = server_for(pool, mode, TIMEOUT_CONFIG).port
    wire = Wire.connect(port)
    try:
        wire.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        wire.sock.settimeout(3)
        start = time.monotonic()
        resp = wire.response()
        assert 0.8 <= time.monotonic() - start < 2.5
        assert (resp.status, resp.closes) == (408, True)
        assert wire.closed_by_server()
    finally:
        wire.close()
    assert_serves(port)


@pytest.mark.slow
@pytest.mark.parametrize("mode", READ_TIMEOUT_MODES)
def test_request_read_timeout_partial_request_line_closes_silently(
    pool: ServerPool, mode: str
) -> None:
    port = server_for(pool, mode, TIMEOUT_CONFIG).port
    wire = Wire.connect(port)
    try:
        wire.send(b"GET /slow HT")
        assert 0.8 <= closed_after(wire, 3) < 2.5  # closed_by_server: no response bytes at all
    finally:
        wire.close()
    assert_serves(port)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["X", "prefork", "event"])
def test_request_read_timeout_partial_body_gets_408(pool: ServerPool, mode: str) -> None:
    port = server_for(pool, mode, TIMEOUT_CONFIG).port
    wire = Wire.connect(port)
    try:
        wire.send(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        wire.sock.settimeout(4)
        start = time.monotonic()
        resp = wire.response()
        assert 0.8 <= time.monotonic() - start < 2.5
        assert (resp.status, resp.closes) == (408, True)
        assert wire.closed_by_server()
    finally:
        wire.close()
    assert_serves(port)
