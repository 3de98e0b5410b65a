"""mod_proxy_hcheck's checker: requests, the state machine with explicit times, real sockets."""

from __future__ import annotations

import socket
import textwrap
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tests.server import free_port

from mpmd.config.build import load_config
from mpmd.config.model import BackendMember, WorkerParams
from mpmd.handlers.proxy.hcexpr import parse
from mpmd.handlers.proxy.hcheck import (
    Checker,
    CheckFailed,
    Target,
    passed,
    probe,
    record,
    request_for,
    targets,
)
from mpmd.handlers.proxy.state import ERROR, HC_FAIL, ProxyState


def member(path: str = "", **params) -> BackendMember:
    return BackendMember(
        url=f"http://10.0.0.1:8080{path}", scheme="http", host="10.0.0.1", port=8080, path=path,
        params=WorkerParams(**params), source="t:1",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("path", "hcmethod", "hcuri", "line"),
    [
        ("", "TCP", "", None),
        ("", "GET", "/", "GET / HTTP/1.0"),
        ("", "GET", "", "GET / HTTP/1.0"),
        ("", "HEAD", "health", "HEAD /health HTTP/1.0"),
        ("/app", "GET", "/status.php", "GET /app/status.php HTTP/1.0"),
        ("/app", "GET11", "status", "GET /app/status HTTP/1.1"),
        ("/app", "HEAD11", "", "HEAD /app HTTP/1.1"),
        ("/app", "OPTIONS", "/x", "OPTIONS * HTTP/1.0"),
        ("", "OPTIONS11", "", "OPTIONS * HTTP/1.1"),
    ],
)
def test_the_request_a_check_sends(path, hcmethod, hcuri, line) -> None:
    sent = request_for(member(path, hcmethod=hcmethod, hcuri=hcuri))
    if line is None:
        assert sent is None
    else:
        assert sent == f"{line}\r\nHost: 10.0.0.1:8080\r\n\r\n".encode()


def write_config(tmp_path: Path, body: str) -> Path:
    conf = tmp_path / "hc.conf"
    conf.write_text(
        f"Listen 127.0.0.1:{free_port()}\nServerName localhost\nErrorLog {tmp_path}/err\n"
        + textwrap.dedent(body)
    )
    return conf


def test_targets_are_the_checked_balancer_members_with_their_settings(tmp_path: Path) -> None:
    conf = write_config(
        tmp_path,
        """\
        Timeout 40
        ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}
        ProxyHCTemplate tpl hcmethod=HEAD hcinterval=5 hcpasses=3
        <Proxy balancer://b>
          BalancerMember http://127.0.0.1:9001 hcmethod=GET hcuri=/up hcexpr=OK234 timeout=7
          BalancerMember http://127.0.0.1:9002 hctemplate=tpl connectiontimeout=2
          BalancerMember http://127.0.0.1:9003
        </Proxy>
        ProxyPass /d http://127.0.0.1:9004 hcmethod=TCP
        """,
    )
    first, second = targets(load_config(str(conf)))
    assert (first.balancer, first.url, first.hcmethod) == (
        "balancer://b",
        "http://127.0.0.1:9001",
        "GET",
    )
    assert first.request == b"GET /up HTTP/1.0\r\nHost: 127.0.0.1:9001\r\n\r\n"
    assert (first.interval, first.passes, first.fails) == (30.0, 1, 1)
    assert (first.expr_name, first.expr.text) == ("ok234", "%{REQUEST_STATUS} =~ /^[234]/")
    assert (first.connect_timeout, first.timeout) == (7.0, 7.0)
    assert (second.hcmethod, second.interval, second.passes, second.expr) == ("HEAD", 5.0, 3, None)
    assert (second.connect_timeout, second.timeout) == (2.0, 40.0)
    assert load_config(str(conf)).hc_tpsize == 16


def test_a_bad_expression_and_a_negative_pool_are_config_errors(tmp_path: Path) -> None:
    from mpmd.config.syntax import ConfigError

    conf = write_config(tmp_path, "ProxyHCExpr bad {%{REQUEST_STATUS} =~ /^[234/}\n")
    with pytest.raises(ConfigError, match=r"hc.conf:4: Could not parse expression "):
        load_config(str(conf))
    conf = write_config(tmp_path, "ProxyHCTPsize -1\n")
    with pytest.raises(ConfigError, match="Parameter must be >= 0"):
        load_config(str(conf))


# -- the state machine ---------------------------------------------------------------------------
@pytest.fixture
def state(tmp_path: Path) -> ProxyState:
    conf = write_config(
        tmp_path,
        """\
        <Proxy balancer://b>
          BalancerMember http://127.0.0.1:9001 hcmethod=TCP hcinterval=2
          BalancerMember http://127.0.0.1:9002 hcmethod=TCP status=+S
        </Proxy>
        """,
    )
    proxy = ProxyState.create(str(tmp_path / "state"), load_config(str(conf)))
    yield proxy
    proxy.close()


def run(slot, outcomes: str, passes: int, fails: int, start: float = 1000.0) -> list:
    """Feed results ('+' pass, '-' fail) one second apart; what each one logged."""
    return [
        record(slot, outcome == "+", start + i, passes, fails) for i, outcome in enumerate(outcomes)
    ]


def test_failures_set_c_at_hcfails(state: ProxyState) -> None:
    slot = state.worker("balancer://b", "http://127.0.0.1:9001")
    assert run(slot, "+--", passes=1, fails=2) == [None, None, "DISABLING"]
    assert slot.has_flag("C") and slot.usable is False
    assert (slot.hc_fcount, slot.hc_pcount, slot.error_time, slot.hc_checked) == (
        0,
        0,
        1002.0,
        1002.0,
    )


def test_failures_need_not_be_consecutive_as_in_apache(state: ProxyState) -> None:
    slot = state.worker("balancer://b", "http://127.0.0.1:9001")
    assert run(slot, "-++-", passes=1, fails=2) == [None, None, None, "DISABLING"]


def test_passes_clear_c_and_e_at_hcpasses_and_a_failure_meanwhile_changes_nothing(state) -> None:
    slot = state.worker("balancer://b", "http://127.0.0.1:9001")
    slot.set_flag("C", True)
    slot.set_flag("E", True)
    slot.error_time = 5.0
    assert run(slot, "+-+", passes=2, fails=1) == [None, None, "ENABLING"]
    assert not slot.status & (HC_FAIL | ERROR) and slot.usable
    assert (slot.hc_pcount, slot.hc_fcount, slot.error_time, slot.hc_checked) == (0, 0, 5.0, 1002.0)


def test_a_member_in_error_from_a_request_is_enabled_by_a_check(state: ProxyState) -> None:
    slot = state.worker("balancer://b", "http://127.0.0.1:9001")
    slot.set_flag("E", True)
    assert run(slot, "-+", passes=1, fails=1) == [None, "ENABLING"]
    assert slot.usable


def test_hcpasses_and_hcfails_zero_act_on_the_first_result(state: ProxyState) -> None:
    slot = state.worker("balancer://b", "http://127.0.0.1:9001")
    assert run(slot, "-+", passes=0, fails=0) == ["DISABLING", "ENABLING"]


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str | None, str, str]] = []

    def log(self, level: str, message: str, *, module: str = "core", ah=None, **kw) -> None:
        self.lines.append((level, ah, module, message))

    def exception(self, message: str, *, module: str = "core", **kw) -> None:
        self.lines.append(("error", None, module, message))


def test_due_members_one_interval_after_begin_skipping_stopped_and_running(state) -> None:
    found = targets(load_config(str(Path(state.path).parent / "hc.conf")))
    checker = Checker(found, state, Log(), tpsize=0)
    checker.begin(1000.0)
    assert checker.due(1002.0) == []  # Apache: now > updated + interval
    assert [t.url for t in checker.due(1002.01)] == ["http://127.0.0.1:9001"]  # not the S one
    checker.running.add(found[0].key)
    assert checker.due(1002.01) == []


# -- checks against real sockets ---------------------------------------------------------------
class Backend:
    """A loopback server answering every connection with `answer` (then closing)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


def target_for(port: int, hcmethod: str = "GET", expr: str | None = None) -> Target:
    m = replace(member(hcmethod=hcmethod), host="127.0.0.1", port=port)
    return Target(
        balancer="balancer://b", url=f"http://127.0.0.1:{port}", host="127.0.0.1", port=port,
        hcmethod=hcmethod, request=request_for(m), interval=1.0, passes=1, fails=1,
        expr=parse(expr) if expr else None, expr_name="e" if expr else "",
        connect_timeout=2.0, timeout=2.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "hcmethod", "expr", "ok"),
    [
        (b"HTTP/1.0 200 OK\r\n\r\nfine", "GET", None, True),
        (b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n", "GET11", None, True),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "GET", None, False),
        (b"HTTP/1.1 503 Busy\r\nContent-Length: 3\r\n\r\nno!", "GET", "%{REQUEST_STATUS} =~ /^5/", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nOut of Inventory\r\n0\r\n\r\n",
         "GET", "hc('body') !~ /Out of Inventory/", False),
        (b"HTTP/1.0 200 OK\r\n\r\nIn stock", "GET", "hc('body') !~ /Out of Inventory/", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", "HEAD", None, True),  # head only
        (b"HTTP/1.1 200 OK\r\nAllow: GET\r\n\r\n", "OPTIONS11", "resp('Allow') == 'GET'", True),
    ],
)  # fmt: skip
def test_a_check_judges_the_answer(answer: bytes, hcmethod: str, expr, ok: bool) -> None:
    backend = Backend(answer)
    try:
        target = target_for(backend.port, hcmethod, expr)
        assert passed(target, probe(target)) is ok
        assert backend.requests[0] == target.request
    finally:
        backend.close()


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b"garbage\r\n\r\n", b""],
)
def test_a_truncated_or_malformed_answer_fails(answer: bytes) -> None:
    backend = Backend(answer)
    try:
        with pytest.raises(CheckFailed):
            probe(target_for(backend.port))
    finally:
        backend.close()


def test_tcp_checks_connect_only() -> None:
    backend = Backend(b"")
    try:
        assert probe(target_for(backend.port, "TCP")) is None
    finally:
        backend.close()
    with pytest.raises(OSError):
        probe(target_for(free_port(), "TCP"))


def checker_for(tmp_path: Path, port: int, *, tpsize: int, extra: str = "") -> Checker:
    conf = write_config(
        tmp_path,
        f"""\
        ProxyHCExpr num {{hc('body') -eq 1}}
        <Proxy balancer://b>
          BalancerMember http://127.0.0.1:{port} hcmethod=GET hcinterval=1 {extra}
        </Proxy>
        """,
    )
    config = load_config(str(conf))
    state = ProxyState.create(str(tmp_path / "state"), config)
    return Checker(targets(config), state, Log(), tpsize=tpsize)


def test_the_checker_disables_then_enables_with_apaches_lines(tmp_path: Path) -> None:
    port = free_port()
    checker = checker_for(tmp_path, port, tpsize=0)
    slot = checker.state.worker("balancer://b", f"http://127.0.0.1:{port}")
    checker.tick(1000.0)  # hc_checked is 0: due
    assert slot.has_flag("C")
    assert checker.error_log.lines[-1] == (
        "info", "AH03303", "proxy_hcheck", f"Health check DISABLING http://127.0.0.1:{port}"
    )  # fmt: skip
    backend = Backend(b"HTTP/1.0 200 OK\r\n\r\n1")
    try:
        checker.targets = [replace(checker.targets[0], port=backend.port)]
        checker.tick(slot.hc_checked + 1.5)
        assert not slot.has_flag("C")
        assert checker.error_log.lines[-1][:3] == ("info", "AH03302", "proxy_hcheck")
    finally:
        backend.close()
        checker.state.close()


def test_threaded_checks_and_an_expression_error_are_logged(tmp_path: Path) -> None:
    backend = Backend(b"HTTP/1.0 200 OK\r\n\r\nnot a number")
    checker = checker_for(tmp_path, backend.port, tpsize=4, extra="hcexpr=num")
    try:
        checker.tick(1000.0)
        checker.pool.shutdown(wait=True)
        lines = checker.error_log.lines
        ahs = [(ah, message) for level, ah, _module, message in lines if level != "debug"]
        assert ahs[0][0] == "AH03301" and "Error on checking condition num" in ahs[0][1]
        assert ahs[1] == (
            "AH03303",
            f"Threaded Health check DISABLING http://127.0.0.1:{backend.port}",
        )
        assert checker.running == set()
    finally:
        backend.close()
        checker.state.close()
