"""Scale-out (issue 14 item 6): three mpmd hosts, each in a network namespace of its own joined
to this one by a veth pair, behind a real balancer (HAProxy from Debian, health checks on
/server-status?auto; and mpmd's own balancer with mod_proxy_hcheck). Under a bounded load every
request the load generator sends is answered 2xx or counted: a rolling graceful restart of every
host loses none, a host's whole process tree SIGKILLed loses none behind a balancer that retries,
and a host drained with graceful-stop finishes its requests and gets no new ones.

Root only (namespaces); the namespaces, links and processes are the test's and removed by it.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from server import APPS, Server, children_of, free_port, pid_alive, wait_for

HOSTS = ("prefork", "worker", "event")  # one host of each MPM
# Each host must hold every client alone once the others are gone: a prefork child is held by
# each kept-alive balancer connection (the balancer's health check needs one more)
POOLS = {
    "prefork": "StartServers 16\nMinSpareServers 4\nMaxSpareServers 32\n",
    "worker": "",
    "event": "",
}
CLIENTS = 12
HAPROXY = shutil.which("haproxy")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is missing"),
]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Namespaces:
    """`count` namespaces; namespace i holds 10.X.i.2/24 on its end of a veth pair whose other
    end (10.X.i.1) is in this namespace. X is derived from the pid, so runs do not collide."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
        self.net = 200 + os.getpid() % 50
        self.names = [f"mpmd{tag}h{i}" for i in range(count)]
        self.links = [f"mp{tag}v{i}" for i in range(count)]
        made = []
        try:
            for i, (name, link) in enumerate(zip(self.names, self.links, strict=True)):
                _ip("netns", "add", name)
                made.append(i)
                _ip("-n", name, "link", "set", "lo", "up")
                _ip("link", "add", link, "type", "veth", "peer", "name", link + "p")
                _ip("link", "set", link + "p", "netns", name)
                _ip("addr", "add", f"10.{self.net}.{i}.1/24", "dev", link)
                _ip("link", "set", link, "up")
                _ip("-n", name, "addr", "add", f"10.{self.net}.{i}.2/24", "dev", link + "p")
                _ip("-n", name, "link", "set", link + "p", "up")
        except (subprocess.CalledProcessError, OSError) as error:
            self.remove()
            pytest.skip(f"cannot create network namespaces here: {error}")

    def address(self, i: int) -> str:
        return f"10.{self.net}.{i}.2"

    def remove(self) -> None:
        for link in self.links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Host(Server):
    """mpmd in namespace `netns`, listening on `address`:8080: a WSGI app and the status page."""

    def __init__(self, tmp: Path, mpm: str, netns: str, address: str) -> None:
        tmp.mkdir()
        config = POOLS[mpm] + textwrap.dedent("""\
            WSGIApp / testapp:sleepy
            ExtendedStatus On
            GracefulShutdownTimeout 10
            KeepAliveTimeout 30
            <Location /server-status>
                SetHandler server-status
            </Location>
            """)
        super().__init__(tmp, config, mpm=mpm, launcher=("ip", "netns", "exec", netns))
        self.address = address
        self.conf.write_text(
            self.conf.read_text().replace(f"Listen 127.0.0.1:{self.port}", f"Listen {address}:8080")
        )

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"mpmd exited with {self.proc.returncode}: {self.output()}")
        try:
            conn = http.client.HTTPConnection(self.address, 8080, timeout=1)
            conn.request("GET", "/server-status?auto")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def configured_count(self) -> int:
        return self.log_text().count("configured -- resuming normal operations")

    def kill_tree(self) -> None:
        """SIGKILL the parent and every child at once (a host that dies)."""
        for pid in [self.pid, *children_of(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


class Load:
    """CLIENTS threads, each a keep-alive connection to the balancer, sending GETs until told to
    stop; a failed request (an exception or a non-2xx) is counted, then the client reconnects.
    Nothing is retried on the client side: every loss is one a real client would see."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = self.ok = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stopping.is_set():
            try:
                conn.request("GET", "/?seconds=0.02")
                response = conn.getresponse()
                response.read()
                good, what = 200 <= response.status < 300, str(response.status)
            except (OSError, http.client.HTTPException) as error:
                good, what = False, repr(error)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.lock:
                self.sent += 1
                if good:
                    self.ok += 1
                else:
                    self.failures.append(what)
        conn.close()

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def progress(self, more: int) -> None:
        """Wait until `more` further requests were answered (bounded)."""
        target = self.ok + more
        wait_for(lambda: self.ok >= target, timeout=60)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def _haproxy(tmp: Path, port: int, hosts: list[Host]) -> subprocess.Popen:
    servers = "".join(
        f"    server h{i} {h.address}:8080 check inter 500 fall 2 rise 2 "
        "observe layer4 error-limit 1 on-error mark-down\n"
        for i, h in enumerate(hosts)
    )
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        textwrap.dedent(f"""\
            global
                maxconn 1000
                log stdout format raw local0
            defaults
                mode http
                log global
                option httplog
                timeout connect 2s
                timeout client 30s
                timeout server 30s
                timeout check 3s
                retries 3
                option redispatch 1
                retry-on all-retryable-errors
            frontend fe
                bind 127.0.0.1:{port}
                default_backend hosts
            backend hosts
                balance roundrobin
                option httpchk GET /server-status?auto
                http-check expect status 200
            """)
        + servers
    )
    with open(tmp / "haproxy.log", "wb") as log:  # its request log and state changes
        return subprocess.Popen(
            [HAPROXY, "-f", str(conf), "-db"], stdout=log, stderr=subprocess.STDOUT
        )


def _mpmd_balancer(tmp: Path, hosts: list[Host]) -> Server:
    members = "".join(
        f"    BalancerMember http://{h.address}:8080 hcmethod=GET "
        f"hcuri=/server-status?auto hcinterval=1 hcpasses=2 hcfails=1 retry=5\n"
        for h in hosts
    )
    config = f"<Proxy balancer://hosts>\n{members}</Proxy>\nProxyPass / balancer://hosts/\n"
    tmp.mkdir()
    return Server(tmp, config, mpm="event")


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/?seconds=0")
        return conn.getresponse().status == 200
    except OSError:
        return False


@pytest.mark.parametrize("balancer", ["haproxy", "mpmd"])
def test_hosts_restart_die_and_drain_behind_a_balancer_without_losing_a_request(tmp_path, balancer):
    if balancer == "haproxy" and HAPROXY is None:
        pytest.skip("Debian package haproxy is not installed")
    assert (APPS / "testapp.py").exists()
    spaces = Namespaces(len(HOSTS))
    hosts: list[Host] = []
    front_proc = front = None
    load = None
    try:
        for i, mpm in enumerate(HOSTS):
            hosts.append(Host(tmp_path / f"host{i}", mpm, spaces.names[i], spaces.address(i)))
            hosts[-1].start()
        if balancer == "haproxy":
            port = free_port()
            front_proc = _haproxy(tmp_path, port, hosts)
        else:
            front = _mpmd_balancer(tmp_path / "balancer", hosts).start()
            port = front.port
        wait_for(lambda: _answers(port), timeout=15)
        load = Load(port).start()
        load.progress(200)

        # 1. a rolling graceful restart of every host
        for host in hosts:
            before = host.configured_count()
            host.signal(signal.SIGUSR1)
            wait_for(lambda h=host, n=before: h.configured_count() > n, timeout=15)
            wait_for(lambda h=host: h._ready(), timeout=15)
            load.progress(100)
        restarted = (load.sent, list(load.failures))

        # 2. one host's whole process tree dies
        hosts[2].kill_tree()
        load.progress(300)
        killed = (load.sent, list(load.failures))

        # 3. a host drained by graceful-stop: in-flight requests finish, then it is gone
        hosts[1].signal(signal.SIGWINCH)
        hosts[1].proc.wait(20)
        load.progress(300)
        load.stop()
        assert "caught SIGWINCH" in hosts[1].log_text()
        print(
            f"\n{balancer}: {load.sent} requests sent, {load.ok} answered 2xx, "
            f"{len(load.failures)} failed (after the rolling restart: {restarted[0]} sent, "
            f"{len(restarted[1])} failed; after the SIGKILL: {killed[0]} sent, "
            f"{len(killed[1])} failed)",
            file=sys.stderr,
        )
        assert load.sent == load.ok + len(load.failures)  # every request counted
        assert restarted[1] == [], restarted[1][:5]
        assert killed[1] == [], killed[1][:5]
        assert load.failures == [], load.failures[:5]
    finally:
        if load is not None:
            load.stop()
        if front_proc is not None:
            front_proc.terminate()
            front_proc.wait(10)
        if front is not None:
            front.stop()
        for host in hosts:
            if host.proc is not None and host.proc.poll() is None and pid_alive(host.pid):
                host.stop()
        spaces.remove()
