"""balancer-manager and ProxyStatus on a real prefork server with two children: a form rendered
by one child is accepted by another, every child shows the edit, the guards hold, Require
applies, ?auto and /metrics carry the members, and headless Chromium renders the page
(MPMD_MANAGER_PNG=path keeps the screenshot: docs/balancer-manager.png)."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import subprocess
import tempfile
from urllib.parse import urlencode

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpmd.handlers.proxy.state import ProxyState
from server import Server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
NAME = "balancer://mycluster"
CONFIG = """
StartServers 2
MinSpareServers 2
ScoreBoardFile "{tmp}/scoreboard"
ProxyStatus On
<Proxy "balancer://mycluster">
    BalancerMember "http://127.0.0.1:9" route=a loadfactor=2
    BalancerMember "http://127.0.0.1:19" route=b status=+E
    BalancerMember "http://127.0.0.1:29" route=c
    ProxySet lbmethod=byrequests stickysession=ROUTEID
</Proxy>
ProxyPass "/app" "balancer://mycluster"
<Location /balancer-manager>
    SetHandler balancer-manager
    Require local
</Location>
<Location /private-manager>
    SetHandler balancer-manager
    Require ip 10.0.0.0/8
</Location>
<Location /server-status>
    SetHandler server-status
    Require local
</Location>
<Location /metrics>
    SetHandler metrics
    Require local
</Location>
"""
W1, W2, W3 = "http://127.0.0.1:9", "http://127.0.0.1:19", "http://127.0.0.1:29"


def request(server: Server, method: str, path: str, body: bytes = b"", headers=None):
    """One request on a fresh connection (so prefork may give it to either child)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        hdrs = {"Connection": "close", **(headers or {})}
        if method == "POST":
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body or None, headers=hdrs)
        response = conn.getresponse()
        return response.status, response.read().decode("latin-1")
    finally:
        conn.close()


def nonce_of(page: str) -> str:
    return re.search(r"nonce=([0-9a-f-]{36})", page).group(1)


def submit(server: Server, nonce: str, referer: str | None = None, **fields) -> str:
    body = urlencode({"b": "mycluster", "nonce": nonce, **fields}).encode()
    origin = referer if referer is not None else f"http://127.0.0.1:{server.port}/balancer-manager"
    status, page = request(server, "POST", "/balancer-manager", body, {"Referer": origin})
    assert status == 200
    return page


@pytest.fixture
def server(tmp_path):
    with Server(tmp_path, CONFIG.format(tmp=tmp_path), mpm="prefork") as srv:
        yield srv


def shared(server: Server) -> ProxyState:
    return ProxyState.attach(str(server.tmp / "scoreboard") + ".proxy")


def test_forms_across_children_and_the_guards(server):
    pages = [request(server, "GET", "/balancer-manager")[1] for _ in range(8)]
    nonces = {nonce_of(page) for page in pages}
    assert len(nonces) == 1  # every child renders the parent's nonce
    nonce = nonces.pop()
    # edits from successive connections (either child), each one seen by the next
    submit(server, nonce, w=W3, w_status_N="1")
    submit(server, nonce, w=W1, w_lf="3.5")
    submit(server, nonce, b_lbm="bytraffic")
    submit(server, nonce, w=W1, w_status_D="1")
    for _ in range(8):
        page = request(server, "GET", "/balancer-manager")[1]
        assert "<td>3.50</td><td>0</td><td>Init Dis </td>" in page
        assert "<td>Init Drn Ok </td>" in page and "<td>bytraffic</td>" in page
    state = shared(server)
    try:
        bal = state.snapshot().balancer(NAME)
        assert bal.lbmethod == "bytraffic" and bal.members[0].lbfactor == 350
        assert bal.members[2].has_flag("N") and not bal.members[0].usable
        # a wrong nonce, then a cross-site Referer: nothing changes
        submit(server, "0" * 36, w=W1, w_lf="7")
        submit(server, nonce, referer="http://evil.example/", w=W1, w_lf="7")
        assert state.snapshot().balancer(NAME).members[0].lbfactor == 350
    finally:
        state.close()
    log = server.log_text()
    assert log.count("AH10187: ignoring params in balancer-manager cross-site access") == 1
    assert "referer: http://evil.example/" in log
    assert request(server, "GET", "/private-manager")[0] == 403


def test_proxy_status_on_server_status_and_metrics(server):
    status, auto = request(server, "GET", "/server-status?auto")
    assert status == 200
    assert auto.endswith(
        "ProxyBalancer[0]Name: balancer://mycluster\n"
        "ProxyBalancer[0]Worker[0]Name: http://127.0.0.1:9\n"
        "ProxyBalancer[0]Worker[0]Status: Init Ok \n"
        "ProxyBalancer[0]Worker[0]Elected: 0\n"
        "ProxyBalancer[0]Worker[0]Busy: 0\n"
        "ProxyBalancer[0]Worker[0]Sent: 0K\n"
        "ProxyBalancer[0]Worker[0]Rcvd: 0K\n"
        "ProxyBalancer[0]Worker[1]Name: http://127.0.0.1:19\n"
        "ProxyBalancer[0]Worker[1]Status: Init Err \n"
        "ProxyBalancer[0]Worker[1]Elected: 0\n"
        "ProxyBalancer[0]Worker[1]Busy: 0\n"
        "ProxyBalancer[0]Worker[1]Sent: 0K\n"
        "ProxyBalancer[0]Worker[1]Rcvd: 0K\n"
        "ProxyBalancer[0]Worker[2]Name: http://127.0.0.1:29\n"
        "ProxyBalancer[0]Worker[2]Status: Init Ok \n"
        "ProxyBalancer[0]Worker[2]Elected: 0\n"
        "ProxyBalancer[0]Worker[2]Busy: 0\n"
        "ProxyBalancer[0]Worker[2]Sent: 0K\n"
        "ProxyBalancer[0]Worker[2]Rcvd: 0K\n"
    )
    assert "\nScoreboard: " in auto
    html = request(server, "GET", "/server-status")[1]
    assert "<h1>Proxy LoadBalancer Status for balancer://mycluster</h1>" in html
    assert html.index("Proxy LoadBalancer Status") < html.index("</body></html>")
    metrics = request(server, "GET", "/metrics")[1]
    samples = {
        (s.name, s.labels.get("member")): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples[("mpmd_proxy_in_error", W2)] == 1 and samples[("mpmd_proxy_usable", W1)] == 1
    assert samples[("mpmd_proxy_requests_total", W1)] == 0


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", f"--user-data-dir={profile}", *args, url],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium missing")
def test_page_renders_in_headless_chromium(server, tmp_path):
    """One member draining, one in error, traffic figures written into the shared state."""
    nonce = nonce_of(request(server, "GET", "/balancer-manager")[1])
    submit(server, nonce, w=W3, w_status_N="1")
    state = ProxyState.attach(str(server.tmp / "scoreboard") + ".proxy", readonly=False)
    try:
        with state.lock():
            for url, elected, sent, read in ((W1, 1412, 1_904_311, 48_127_004), (W3, 703, 951_870, 23_460_112)):  # fmt: skip
                slot = state.worker(NAME, url)
                slot.elected, slot.transferred, slot.read = elected, sent, read
            state.worker(NAME, W1).busy = 2
    finally:
        state.close()
    url = f"http://127.0.0.1:{server.port}/balancer-manager"
    dom = _chromium(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for column in ("MaxMembers", "Worker URL", "Elected", "From"):
        assert f"<th>{column}</th>" in dom.stdout
    assert "Init Drn Ok" in dom.stdout and "Init Err" in dom.stdout and "1.8M" in dom.stdout
    shot = tmp_path / "manager.png"
    png = _chromium(url, f"--screenshot={shot}", "--window-size=1100,560")
    assert png.returncode == 0, png.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("MPMD_MANAGER_PNG")
    if keep:
        shutil.copyfile(shot, keep)
