"""balancer-manager and ProxyStatus in-process: the page, the edits and their guards (nonce,
Referer), the XML dump, the status hook's `?auto` lines and HTML, and the /metrics series."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from urllib.parse import urlencode

import pytest

from helpers import make_exchange, make_request, parse_response
from mpmd.config.build import load_config
from mpmd.config.model import (
    BackendMember,
    Balancer,
    BalancerParams,
    ProxyRoute,
    ProxySettings,
    ServerConfig,
    WorkerParams,
)
from mpmd.handlers.metrics import make_registry
from mpmd.handlers.proxy import status_page
from mpmd.handlers.proxy.manager import (
    c_atof,
    c_atoi,
    make_manager_handler,
    parse_params,
    same_origin,
)
from mpmd.handlers.proxy.state import ProxyState
from mpmd.handlers.status import escape_html
from mpmd.handlers.status_format import strfsize
from mpmd.logs.error import ErrorLog
from mpmd.mpm.scoreboard import Scoreboard

NAME = "balancer://mycluster"


def member(n: int, **params) -> BackendMember:
    port = 9000 + n
    return BackendMember(
        url=f"http://127.0.0.1:{port}", scheme="http", host="127.0.0.1", port=port, path="",
        params=WorkerParams(**params), source=f"t:{n}",
    )  # fmt: skip


@cache
def _base() -> ServerConfig:
    return load_config(None)


def make_cfg(nonce: str | None = "", proxy_status: bool = True) -> ServerConfig:
    members = (
        member(1, route="a", loadfactor=200),
        member(2, route="b", status="E"),
        member(3, route="c", status="N"),
    )
    params = BalancerParams(sticky_cookie="ROUTEID", sticky_param="ROUTEID", nonce=nonce)
    bal = Balancer(NAME, members, params, "t:1")
    route = ProxyRoute("/app", False, NAME, None, "t:2")
    main = replace(_base().main, proxy=ProxySettings(routes=(route,)))
    return replace(_base(), balancers=(bal,), main=main, proxy_status=proxy_status)


@pytest.fixture
def setup(tmp_path):
    config = make_cfg()
    state = ProxyState.create(str(tmp_path / "proxy"), config)
    with state.lock():
        w1 = state.worker(NAME, "http://127.0.0.1:9001")
        w1.elected, w1.busy, w1.transferred, w1.read, w1.lbstatus = 42, 3, 1234567, 2048, -17
    log = Log(tmp_path / "error_log")
    yield config, state, log, make_manager_handler(config, state, log.log)
    state.close()
    log.log.close()


class Log:
    """A real ErrorLog on a file, read back."""

    def __init__(self, path) -> None:
        self.path = path
        self.log = ErrorLog(str(path), "warn")

    def text(self) -> str:
        return self.path.read_text() if self.path.exists() else ""


def call(handler, method="GET", target="/balancer-manager", body=b"", referer=None):
    headers = [("host", "localhost")]
    if referer:
        headers.append(("referer", referer))
    request = make_request(method, target, headers, body)
    exchange, sink = make_exchange(request)
    handler(exchange)
    response = parse_response(sink.data, head_only=method == "HEAD")
    return response.status, response.body.decode("latin-1")


def post(handler, nonce, referer="http://localhost/balancer-manager", **fields):
    body = urlencode({"b": "mycluster", "nonce": nonce, **fields}).encode()
    return call(handler, "POST", body=body, referer=referer)


def test_number_and_size_formats() -> None:
    assert [strfsize(n) for n in (0, 972, 973, 1234, 10240, 1234567, 5 << 30)] == [
        "  0 ", "972 ", "1.0K", "1.2K", " 10K", "1.2M", "5.0G",
    ]  # fmt: skip
    assert (c_atoi(" 12x"), c_atoi("x"), c_atoi("-3")) == (12, 0, -3)
    assert (c_atof("2.5abc"), c_atof(""), c_atof("1e1")) == (2.5, 0.0, 10.0)
    assert parse_params("w=http%253A%252F%252Fh&x=1&b=a+b", {"w", "b"}) == {
        "w": "http://h",
        "b": "a+b",
    }
    assert same_origin("http://LocalHost:8080/x", "localhost")
    assert not same_origin("http://evil.example/x", "localhost")
    assert not same_origin(None, "localhost")


def test_page_has_apaches_tables_and_the_members_values(setup) -> None:
    _config, state, _log, handler = setup
    status, page = call(handler)
    assert status == 200
    nonce = state.snapshot().balancer(NAME).nonce
    assert len(nonce) == 36
    assert "<dt>Balancer changes will NOT be persisted on restart.</dt>" in page
    assert "<h1>Load Balancer Manager for localhost</h1>" in page
    for column in (
        "MaxMembers", "StickySession", "DisableFailover", "Timeout", "FailoverAttempts",
        "Method", "Path", "Active", "Worker URL", "Route", "RouteRedir", "Factor", "Set",
        "Status", "Elected", "Busy", "Load", "To", "From",
    ):  # fmt: skip
        assert f"<th>{column}</th>" in page
    assert (
        "<tr><td>3 [3 Used]</td>\n<td>ROUTEID</td><td>Off</td>\n<td>0</td><td>2</td>\n"
        "<td>byrequests</td>\n<td>/app</td>\n<td>Yes</td>\n</tr>"
    ) in page
    assert (
        f'<td><a href="/balancer-manager?b=mycluster&amp;w=http://127.0.0.1:9001&amp;'
        f'nonce={nonce}">http://127.0.0.1:9001</a></td><td>a</td><td></td><td>2.00</td>'
        "<td>0</td><td>Init Ok </td><td>42</td><td>3</td><td>-17</td><td>1.2M</td>"
        "<td>2.0K</td></tr>"
    ) in page
    assert "<td>Init Err </td>" in page and "<td>Init Drn Ok </td>" in page
    status, head = call(handler, "HEAD")
    assert status == 200 and head == ""
    assert call(handler, "PUT")[0] == 405


def test_selecting_shows_the_edit_forms(setup) -> None:
    _config, state, _log, handler = setup
    nonce = state.snapshot().balancer(NAME).nonce
    query = f"?b=mycluster&w=http://127.0.0.1:9003&nonce={nonce}"
    _status, page = call(handler, target="/balancer-manager" + query, referer="http://localhost/")
    assert "<h3>Edit worker settings for http://127.0.0.1:9003</h3>" in page
    assert "<input name='w_lf' id='w_lf' type=text value='1.00'>" in page
    assert "name='w_status_N' id='w_status_N1' value='1' type=radio checked>" in page
    assert "name='w_status_D' id='w_status_D0' value='0' type=radio checked>" in page
    assert f"<input type=hidden name='nonce' id='nonce' value='{nonce}'>" in page
    _status, page = call(
        handler, target=f"/balancer-manager?b=mycluster&nonce={nonce}", referer="http://localhost/"
    )
    assert "<h3>Edit balancer settings for balancer://mycluster</h3>" in page
    assert "<option value='byrequests' selected >byrequests" in page
    assert "name='b_sforce' id='b_sforce0' value='0' type=radio checked>" in page


def test_the_forms_change_the_shared_state(setup) -> None:
    _config, state, log, handler = setup
    nonce = state.snapshot().balancer(NAME).nonce
    w1, w2 = "http://127.0.0.1:9001", "http://127.0.0.1:9002"
    status, page = post(handler, nonce, w=w1, w_lf="3.5", w_status_N="1", w_ls="2", w_wr="z")
    assert status == 200 and "<td>3.50</td><td>2</td><td>Init Drn Ok </td>" in page
    snap = state.snapshot().balancer(NAME)
    first = snap.members[0]
    assert (first.lbfactor, first.lbset, first.route, first.has_flag("N")) == (350, 2, "z", True)
    assert [m.lbstatus for m in snap.members] == [350, 100, 100]  # recalc_factors
    post(handler, nonce, w=w1, w_status_D="1", w_lf="101")  # out of range: the factor stays
    first = state.snapshot().balancer(NAME).members[0]
    assert first.has_flag("D") and not first.usable and first.lbfactor == 350
    post(handler, nonce, b_lbm="bybusyness", b_tmo="5", b_max="1", b_sforce="1", b_ss="JS|js")
    bal = state.snapshot().balancer(NAME)
    assert (bal.lbmethod, bal.timeout, bal.max_attempts, bal.nofailover) == (
        "bybusyness", 5.0, 1, True,
    )  # fmt: skip
    assert (bal.sticky_cookie, bal.sticky_param) == ("JS", "js")
    assert state.balancer(NAME).need_reset == 1
    state.balancer(NAME).need_reset = 0
    post(handler, nonce, w=w2, w_status_E="0", w_status_D="0")  # E is not a form flag
    assert not state.snapshot().balancer(NAME).members[1].usable
    post(handler, nonce, w=w1, w_status_D="0", b_lbm="nosuch", b_ss="-")
    bal = state.snapshot().balancer(NAME)
    assert bal.members[0].usable and bal.lbmethod == "bybusyness" and not bal.sticky_cookie
    assert state.balancer(NAME).need_reset == 1  # re-enabled: the lbmethod starts over
    assert "AH10187" not in log.text()


@pytest.mark.parametrize(
    ("nonce", "referer"),
    [("wrong", "http://localhost/balancer-manager"), (None, "http://evil.example/x"), (None, "")],
)
def test_a_wrong_nonce_or_a_foreign_referer_changes_nothing(setup, nonce, referer) -> None:
    _config, state, log, handler = setup
    before = state.snapshot()
    real = before.balancer(NAME).nonce
    status, _page = post(
        handler, nonce or real, referer=referer, w="http://127.0.0.1:9001", w_lf="9", b_tmo="9"
    )
    assert status == 200
    after = state.snapshot()
    assert after.balancer(NAME).members[0].lbfactor == 200 and after.balancer(NAME).timeout == 0
    cross = "ignoring params in balancer-manager cross-site access"
    assert (f"AH10187: {cross}" in log.text()) == (nonce is None)


def test_a_get_query_carries_no_edit(setup) -> None:
    _config, state, _log, handler = setup
    nonce = state.snapshot().balancer(NAME).nonce
    target = f"/balancer-manager?b=mycluster&w=http://127.0.0.1:9001&nonce={nonce}&w_lf=5"
    call(handler, target=target, referer="http://localhost/")
    assert state.snapshot().balancer(NAME).members[0].lbfactor == 200


def test_nonce_none_checks_no_nonce(tmp_path) -> None:
    config = make_cfg(nonce=None)
    state = ProxyState.create(str(tmp_path / "proxy"), config)
    handler = make_manager_handler(config, state, ErrorLog(str(tmp_path / "log"), "warn"))
    assert state.snapshot().balancer(NAME).nonce == ""
    post(handler, "", b_tmo="7")
    assert state.snapshot().balancer(NAME).timeout == 7.0
    state.close()


def test_xml_dump(setup) -> None:
    _config, state, _log, handler = setup
    _status, xml = call(handler, target="/balancer-manager?xml=1", referer="http://localhost/")
    nonce = state.snapshot().balancer(NAME).nonce
    assert xml.startswith("<?xml version='1.0' encoding='UTF-8' ?>\n<httpd:manager")
    assert f"      <httpd:nonce>{nonce}</httpd:nonce>\n" in xml
    assert "      <httpd:stickysession>ROUTEID</httpd:stickysession>\n" in xml
    assert "          <httpd:elected>42</httpd:elected>\n" in xml
    assert "          <httpd:status>Init Err </httpd:status>\n" in xml
    assert xml.count("<httpd:worker>") == 3 and xml.endswith("</httpd:manager>")


def test_proxy_status_auto_lines_exactly(setup) -> None:
    _config, state, _log, _handler = setup
    assert status_page.render_auto(state.snapshot()) == (
        "ProxyBalancer[0]Name: balancer://mycluster\n"
        "ProxyBalancer[0]Worker[0]Name: http://127.0.0.1:9001\n"
        "ProxyBalancer[0]Worker[0]Status: Init Ok \n"
        "ProxyBalancer[0]Worker[0]Elected: 42\n"
        "ProxyBalancer[0]Worker[0]Busy: 3\n"
        "ProxyBalancer[0]Worker[0]Sent: 1205K\n"
        "ProxyBalancer[0]Worker[0]Rcvd: 2K\n"
        "ProxyBalancer[0]Worker[1]Name: http://127.0.0.1:9002\n"
        "ProxyBalancer[0]Worker[1]Status: Init Err \n"
        "ProxyBalancer[0]Worker[1]Elected: 0\n"
        "ProxyBalancer[0]Worker[1]Busy: 0\n"
        "ProxyBalancer[0]Worker[1]Sent: 0K\n"
        "ProxyBalancer[0]Worker[1]Rcvd: 0K\n"
        "ProxyBalancer[0]Worker[2]Name: http://127.0.0.1:9003\n"
        "ProxyBalancer[0]Worker[2]Status: Init Drn Ok \n"
        "ProxyBalancer[0]Worker[2]Elected: 0\n"
        "ProxyBalancer[0]Worker[2]Busy: 0\n"
        "ProxyBalancer[0]Worker[2]Sent: 0K\n"
        "ProxyBalancer[0]Worker[2]Rcvd: 0K\n"
    )
    html = status_page.render_html(state.snapshot(), escape_html)
    assert "<hr />\n<h1>Proxy LoadBalancer Status for balancer://mycluster</h1>" in html
    assert "<tr><td>ROUTEID</td><td>0</td><td>byrequests</td>\n</table>" in html
    assert (
        "<tr>\n<td>http</td><td>127.0.0.1</td><td>Init Ok </td><td>a</td><td></td><td>2.00</td>"
        "<td>0</td><td>42</td><td>3</td><td>1.2M</td><td>2.0K</td>\n</tr>"
    ) in html
    assert "<tr><th>Rd</th><td>Number of bytes read</td></tr>\n</table>" in html


def test_proxy_metrics(setup, tmp_path) -> None:
    config, state, _log, _handler = setup
    board = Scoreboard.create(str(tmp_path / "sb"), 2, 2, "prefork")

    def proxy_samples(cfg: ServerConfig) -> dict:
        return {
            (s.name, s.labels.get("member")): s.value
            for family in make_registry(cfg, board, state).collect()
            for s in family.samples
            if s.name.startswith("mpmd_proxy_")
        }

    try:
        samples = proxy_samples(config)
        assert proxy_samples(replace(config, proxy_status=False)) == {}
    finally:
        board.close()
    one, two = "http://127.0.0.1:9001", "http://127.0.0.1:9002"
    assert samples[("mpmd_proxy_requests_total", one)] == 42
    assert samples[("mpmd_proxy_busy", one)] == 3
    assert samples[("mpmd_proxy_sent_bytes_total", one)] == 1234567
    assert samples[("mpmd_proxy_received_bytes_total", one)] == 2048
    assert samples[("mpmd_proxy_usable", two)] == 0 and samples[("mpmd_proxy_in_error", two)] == 1
    assert samples[("mpmd_proxy_load_factor", one)] == 2.0
