"""Issue 11's balancer acceptance, end to end: the real server (prefork, worker, event, each with
several children so that the shared state is decided across processes) in front of real back
ends on loopback (nginx, and mpmd running tests/apps/backendapp.py where a request must be
held). Selection (byrequests' exact sequence, bybusyness, bytraffic), hot standby and lbset
tiers, sticky sessions by cookie and by URL, and a drain through the balancer-manager form.
Failover under load and bad back ends are in test_balancer_failover.py.
"""

from __future__ import annotations

import http.client
import re
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest

from backends import Gate, MpmdBackends, NginxBackends, http_get, nginx_each
from mpmd.handlers.proxy.state import ProxyState
from mpmd.mpm.scoreboard import default_path
from server import Server, wait_for

MPMS = ("prefork", "worker", "event")
# several children each: the balancer state is shared between processes, not per child
POOLS = {
    "prefork": "StartServers 3\nMinSpareServers 3\nMaxSpareServers 6\n",
    "worker": "StartServers 2\nThreadsPerChild 4\nMinSpareThreads 4\nMaxSpareThreads 16\n",
    "event": "StartServers 2\nThreadsPerChild 4\nMinSpareThreads 4\nMaxSpareThreads 16\n",
}
BALANCER_LOG = (
    'CustomLog "{log}" "%P %>s %U %{{BALANCER_WORKER_NAME}}e '
    'session=%{{BALANCER_SESSION_ROUTE}}e worker=%{{BALANCER_WORKER_ROUTE}}e"\n'
)
NAME = "balancer://cluster"


class Front(Server):
    """mpmd in front of `members` (BalancerMember lines' URL and parameters) as
    balancer://cluster on /app, with a log of each request's child, member and routes."""

    def __init__(
        self,
        tmp: Path,
        mpm: str,
        members: list[str],
        proxyset: str = "",
        config: str = "",
        pool: str | None = None,
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        lines = "".join(f"    BalancerMember {member}\n" for member in members)
        proxy = f"<Proxy {NAME}>\n{lines}" + (f"    ProxySet {proxyset}\n" if proxyset else "")
        self.proxy_log = tmp / "proxy_log"
        body = (
            (POOLS[mpm] if pool is None else pool)
            + config
            + proxy
            + f'</Proxy>\nProxyPass "/app" "{NAME}"\n'
            + BALANCER_LOG.format(log=self.proxy_log)
        )
        super().__init__(tmp, body, mpm=mpm)

    def log_lines(self) -> list[str]:
        """The proxied requests' lines (not the readiness probes')."""
        if not self.proxy_log.exists():
            return []
        return [line for line in self.proxy_log.read_text().splitlines() if " /app" in line]


def name_of(headers) -> str:
    return headers["X-Backend"]


def get(front: Server, path: str, headers: dict | None = None) -> tuple[int, str, bytes]:
    """One GET on its own connection (any child may take it): (status, member name, body)."""
    status, hdrs, body = http_get(front.port, path, headers)
    return status, hdrs.get("X-Backend", ""), body


class KeepAlive:
    """Persistent client connections used in turn, so that successive requests reach
    different children while no new connection is paid for each."""

    def __init__(self, port: int, count: int) -> None:
        self.conns = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(count)
        ]
        self.turn = 0
        self.names: list[str] = []  # the members spread_connections' first requests reached

    def get(
        self, path: str, headers: dict | None = None, method: str = "GET", body: bytes = b""
    ) -> tuple[int, str, bytes]:
        """A request on the next connection; as any HTTP client, sent again on a new
        connection when the server had closed the idle one (the event MPM closes its oldest
        idle keep-alive connections when it is full)."""
        conn = self.conns[self.turn % len(self.conns)]
        self.turn += 1
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
        body = response.read()
        return response.status, response.headers.get("X-Backend", ""), body

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spread_connections(front: Front, children: int = 2, limit: int = 16) -> KeepAlive:
    """Keep-alive connections opened one by one (each with a first GET /app/, its member
    in `names`) until `children` different children have served them: the requests made in
    turn on them are then decided in several processes."""
    client = KeepAlive(front.port, 0)
    client.names = []
    pids: set[str] = set()
    while len(pids) < children:
        assert len(client.conns) < limit, f"{limit} connections, all in children {pids}"
        conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        client.conns.append(conn)
        conn.request("GET", "/app/")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        client.names.append(response.headers["X-Backend"])
        wait_for(lambda: len(front.log_lines()) == len(client.conns))
        pids.add(front.log_lines()[-1].split(" ", 1)[0])
    client.turn = len(client.conns)
    return client


def byrequests_sequence(factors: list[int], count: int) -> list[int]:
    """Apache's find_best_byrequests from zeroed lbstatus: every member earns its factor, the
    highest lbstatus wins (the first on a tie) and pays the total back."""
    lbstatus = [0] * len(factors)
    total = sum(factors)
    picks = []
    for _ in range(count):
        best = 0
        for index, factor in enumerate(factors):
            lbstatus[index] += factor
            if lbstatus[index] > lbstatus[best]:
                best = index
        lbstatus[best] -= total
        picks.append(best)
    return picks


def children_that_served(front: Front) -> set[str]:
    return {line.split(" ", 1)[0] for line in front.log_lines()}


# -- byrequests ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_byrequests_1_2_3_is_apaches_sequence_over_10000_requests(tmp_path, mpm):
    count = 10_000
    with NginxBackends(3, tmp_path / "nginx") as nginx:
        members = [
            f"{url} loadfactor={lf}" for url, lf in zip(nginx.members(), (1, 2, 3), strict=True)
        ]
        with Front(tmp_path / "front", mpm, members) as front:
            with spread_connections(front) as client:
                got = client.names[:]
                for _ in range(count - len(got)):
                    status, name, _ = client.get("/app/")
                    assert status == 200
                    got.append(name)
            expected = [nginx.names[i] for i in byrequests_sequence([1, 2, 3], count)]
            assert got[:12] == expected[:12]
            assert got == expected
            wait_for(lambda: len(front.log_lines()) == count)
            assert len(children_that_served(front)) >= 2  # decided across processes


# -- bybusyness ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_bybusyness_sends_new_requests_away_from_busy_members(tmp_path, mpm):
    """Two requests held at the back ends: every new request goes to the third member, the
    only one with nothing in flight; the held ones then complete."""
    with MpmdBackends(3, tmp_path / "backends") as backends:
        front = Front(tmp_path / "front", mpm, backends.members(), "lbmethod=bybusyness")
        with front:
            gates = [Gate(tmp_path, f"held{i}") for i in range(2)]
            held: list[tuple[int, str, bytes]] = []
            threads = []
            try:
                for gate in gates:
                    thread = threading.Thread(
                        target=lambda g=gate: held.append(get(front, "/app" + g.query))
                    )
                    thread.start()
                    threads.append(thread)
                    gate.wait_entered()
                names = [get(front, "/app/hello")[1] for _ in range(12)]
            finally:
                for gate in gates:
                    gate.release()
                for thread in threads:
                    thread.join(30)
            assert sorted(status for status, _, _ in held) == [200, 200]
            busy = {name for _, name, _ in held}
            assert len(busy) == 2  # the second held request avoided the first one's member
            (free,) = set(backends.names) - busy
            assert names == [free] * 12
            # nothing in flight any more: the lbstatus credit the two earned while busy
            # makes them take the next requests (busy ties, the higher lbstatus wins)
            after = [get(front, "/app/hello")[1] for _ in range(4)]
            assert set(after) == busy


# -- bytraffic ----------------------------------------------------------------------------------

TRAFFIC_SIZES = (200_000, 5_000, 120_000, 60_000, 1_000, 90_000, 30_000, 150_000, 10_000, 70_000)


def shared_state(front: Server) -> ProxyState:
    """The front end's balancer state (the scoreboard's default path + ".proxy"), read-only."""
    return ProxyState.attach(f"{default_path(front.pid)}.proxy")


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_bytraffic_balances_bytes(tmp_path, mpm):
    """Each request goes to the member with the lowest transferred/lbfactor + read/lbfactor
    in the shared state when it arrives (the first on a tie), which already holds every
    earlier request's bytes; so the members end within one response of each other."""
    with MpmdBackends(3, tmp_path / "backends") as backends:
        members = [f"{url} loadfactor=2" for url in backends.members()]
        front = Front(tmp_path / "front", mpm, members, "lbmethod=bytraffic")
        with front, KeepAlive(front.port, 3) as client:
            state = shared_state(front)
            try:
                for round_ in range(3):
                    for size in TRAFFIC_SIZES:
                        slots = state.snapshot().balancer(NAME).members
                        scores = [w.transferred // 200 + w.read // 200 for w in slots]
                        least = backends.names[scores.index(min(scores))]
                        if round_ == 1:  # bytes to the back ends count as well
                            data = b"u" * size
                            status, name, body = client.get("/app/upload", method="POST", body=data)
                            assert (status, body.split()[-1]) == (200, b"length=%d" % size)
                        else:
                            status, name, body = client.get(f"/app/big?size={size}&r={round_}")
                            assert (status, len(body)) == (200, size)
                        assert name == least, (scores, name)
                traffic = [w.transferred + w.read for w in state.snapshot().balancer(NAME).members]
            finally:
                state.close()
            assert all(traffic) and max(traffic) - min(traffic) < max(TRAFFIC_SIZES) + 1000
            assert sum(w.transferred for w in slots) > sum(TRAFFIC_SIZES)  # the uploads


# -- hot standby and lbset tiers ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
@pytest.mark.parametrize("reserve", ["status=+H", "lbset=1"])
def test_reserve_takes_traffic_only_when_every_normal_member_is_down(tmp_path, mpm, reserve):
    """A hot standby (+H), or the only member of lbset 1: nothing while lbset 0 has a usable
    member, everything once both are killed, and no client sees an error."""
    with nginx_each(3, tmp_path / "nginx") as nginx:
        members = [n.member for n in nginx]
        members[2] += f" {reserve}"
        with Front(tmp_path / "front", mpm, members) as front:
            names = [get(front, "/app/")[1] for _ in range(12)]
            assert set(names) == {"backend-0", "backend-1"}
            nginx[0].kill()
            names = [get(front, "/app/") for _ in range(8)]
            assert names == [(200, "backend-1", b"backend-1\n")] * 8
            nginx[1].kill()
            names = [get(front, "/app/") for _ in range(8)]
            assert names == [(200, "backend-2", b"backend-2\n")] * 8
            assert "AH00959" in front.log_text()


# -- sticky sessions ----------------------------------------------------------------------------


def _routed(nginx) -> list[str]:
    return [f"{url} route={name}" for url, name in zip(nginx.members(), nginx.names, strict=True)]


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_sticky_sessions_by_cookie_and_by_url(tmp_path, mpm):
    with NginxBackends(3, tmp_path / "nginx") as nginx:
        front = Front(tmp_path / "front", mpm, _routed(nginx), "stickysession=ROUTEID|routeid")
        with front:
            # by cookie: the member that set the cookie gets every request of the session
            # byrequests spreads the new sessions (its exact sequence is test_byrequests_1_2_3…'s;
            # here a member that failed over once under load only needs one more request)
            sessions = {}
            for _ in range(6):
                status, hdrs, _ = http_get(front.port, "/app/cookie")
                assert status == 200
                cookie = [c for c in hdrs.get_all("Set-Cookie") if c.startswith("ROUTEID=")]
                sessions[hdrs["X-Backend"]] = cookie[0].split(";", 1)[0]
                if len(sessions) == 3:
                    break
            assert len(sessions) == 3, (front.log_text()[-2000:], front.log_lines()[-6:])
            for name, cookie in sessions.items():
                assert cookie == f"ROUTEID=s.{name}"
                for _ in range(6):  # a new connection each: any child
                    assert get(front, "/app/x", {"Cookie": f"a=b; {cookie}"})[1] == name
            # by URL parameter (wins over the cookie)
            for _ in range(6):
                route = get(front, "/app/x?routeid=s.backend-1", {"Cookie": "ROUTEID=s.backend-2"})
                assert route[1] == "backend-1"
            lines = front.log_lines()
            member1 = nginx.members()[1]
            assert any(
                line.endswith(f"/x {member1} session=backend-1 worker=backend-1") for line in lines
            ), lines[-3:]
            assert any("session=backend-0 worker=backend-0" in line for line in lines)


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_sticky_session_by_jsessionid_path_parameter(tmp_path, mpm):
    with NginxBackends(3, tmp_path / "nginx") as nginx:
        proxyset = "stickysession=JSESSIONID|jsessionid scolonpathdelim=On"
        with Front(tmp_path / "front", mpm, _routed(nginx), proxyset) as front:
            for index in (2, 0, 2, 1, 2):
                got = get(front, f"/app/page;jsessionid=s.backend-{index}?x=1")
                assert got[:2] == (200, f"backend-{index}")
            assert get(front, "/app/p", {"Cookie": "JSESSIONID=s.backend-1"})[1] == "backend-1"
            wait_for(lambda: len(front.log_lines()) == 6)
            lines = front.log_lines()
            assert all("session=backend-" in line for line in lines)
            for line in lines:
                session = re.search(r"session=(\S+) worker=(\S+)$", line)
                assert session.group(1) == session.group(2), line


# -- drain through the balancer-manager ---------------------------------------------------------

MANAGER = """
<Location /balancer-manager>
    SetHandler balancer-manager
    Require local
</Location>
"""


def _manager_post(front: Server, fields: dict) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", front.port, timeout=10)
    try:
        conn.request("GET", "/balancer-manager")
        page = conn.getresponse().read().decode("latin-1")
        nonce = re.search(r"nonce=([0-9a-f-]{36})", page).group(1)
        body = urlencode({"b": "cluster", "nonce": nonce, **fields})
        conn.request(
            "POST",
            "/balancer-manager",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Referer": front.url("/balancer-manager"),
            },
        )
        response = conn.getresponse()
        response.read()
        assert response.status == 200
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_drain_moves_new_sessions_away_while_in_flight_requests_finish(tmp_path, mpm):
    with MpmdBackends(3, tmp_path / "backends") as backends:
        members = [
            f"{u} route={n}" for u, n in zip(backends.members(), backends.names, strict=True)
        ]
        front = Front(tmp_path / "front", mpm, members, "stickysession=ROUTEID", MANAGER)
        with front:
            gate = Gate(tmp_path, "in-flight")
            held = []
            cookie = {"Cookie": "ROUTEID=s.backend-1"}
            thread = threading.Thread(
                target=lambda: held.append(get(front, "/app" + gate.query, cookie))
            )
            thread.start()
            try:
                gate.wait_entered()
                _manager_post(front, {"w": backends.members()[1], "w_status_N": "1"})
                fresh = {get(front, "/app/hello")[1] for _ in range(12)}
                sticky = {get(front, "/app/hello", cookie)[1] for _ in range(4)}
            finally:
                gate.release()
                thread.join(30)
            assert fresh == {"backend-0", "backend-2"}  # new sessions avoid the drained one
            assert sticky == {"backend-1"}  # its sessions still reach it
            assert held == [(200, "backend-1", b"backend-1 released\n")]
            _manager_post(front, {"w": backends.members()[1], "w_status_N": "0"})
            assert {get(front, "/app/hello")[1] for _ in range(12)} == set(backends.names)
