"""systemd: sd_notify datagrams read by the test, and socket activation through
systemd-socket-activate (reference 3.1-3.3), with the real server."""

from __future__ import annotations

import os
import shutil
import signal
import socket

import pytest

from mpmd.config.model import ListenAddress
from mpmd.mpm import systemd
from server import Server, call, free_port, wait_for

MPMS = ("prefork", "worker", "event")


# -- pure parts -------------------------------------------------------------------------------


def test_status_line_is_mod_systemds():
    line = systemd.status_line(1234, 70, 5, 10.0, 2_000_000)
    assert line == (
        "Total requests: 1234; Idle/Busy workers 70/5;Requests/sec: 123; "
        "Bytes served/sec: 195KB/sec"
    )
    assert "Requests/sec: 0;" in systemd.status_line(0, 1, 0, 0.0, 0)


def test_inherited_sockets_are_only_ours_and_the_variables_are_unset():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert systemd.inherited_sockets(env) == []
    assert env == {}  # sd_listen_fds(1) unsets them whatever the outcome
    assert systemd.inherited_sockets({}) == []


def test_adopt_matches_by_address_and_closes_what_no_listen_names():
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    a.listen()
    b.listen()
    wanted = ListenAddress("127.0.0.1", a.getsockname()[1])
    other = ListenAddress("", free_port())
    matched, warnings = systemd.adopt([other, wanted], [a, b])
    assert matched == {wanted: a}
    assert len(warnings) == 1 and warnings[0].startswith("MP00255: systemd passed a socket")
    assert b.fileno() == -1  # closed
    a.close()


def test_notifier_is_silent_without_notify_socket():
    notifier = systemd.Notifier({})
    assert not notifier.enabled
    notifier.ready()  # no socket, no error


def test_notifier_speaks_to_abstract_names():
    name = f"mpmd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name.encode())
        notifier = systemd.Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.stopping()
        notifier.stopping()  # said once
        listener.settimeout(5)
        assert listener.recv(4096) == b"STOPPING=1\nSTATUS=Shutting down...\n"
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.recv(4096)
        notifier.close()


# -- the real server ---------------------------------------------------------------------------


class NotifySocket:
    """The service manager's end: a datagram socket in tmp_path, each message a dict."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(x.split("=", 1) for x in data.splitlines() if x))

    def wait(self, key: str, after: int = 0, timeout: float = 10) -> int:
        """The index of the first message from `after` on that has `key`."""

        def found():
            messages = self.drain()
            return next((i + 1 for i in range(after, len(messages)) if key in messages[i]), 0)

        return wait_for(found, timeout=timeout) - 1

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_ready_reloading_ready_stopping(tmp_path, mpm):
    notify = NotifySocket(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
    server = Server(tmp_path, "ExtendedStatus On\nWSGIApp / testapp:info\n", mpm=mpm, env=env)
    try:
        with server:
            ready = notify.wait("READY")
            assert notify.messages[ready]["MAINPID"] == str(server.pid)
            notify.wait("WATCHDOG", timeout=5)  # every WATCHDOG_USEC / 2
            server.signal(signal.SIGUSR1)  # mpmctl graceful
            reloading = notify.wait("RELOADING", after=ready + 1)
            assert int(notify.messages[reloading]["MONOTONIC_USEC"]) > 0
            notify.wait("READY", after=reloading + 1)
            assert call(server, "GET", "/")[0] == 200
            status = notify.wait("STATUS", after=reloading + 1, timeout=15)
            while "Total requests" not in notify.messages[status]["STATUS"]:
                status = notify.wait("STATUS", after=status + 1, timeout=15)
            assert "Idle/Busy workers" in notify.messages[status]["STATUS"]
        stopping = notify.wait("STOPPING", after=reloading + 1)
        later = [m for m in notify.drain()[stopping + 1 :] if "READY" in m]
        assert later == []
    finally:
        notify.close()


@pytest.mark.slow
def test_a_broken_config_on_reload_says_ready_again(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    server = Server(
        tmp_path, "WSGIApp / testapp:info\n", mpm="event", env={"NOTIFY_SOCKET": notify.path}
    )
    try:
        with server:
            ready = notify.wait("READY")
            server.conf.write_text(server.conf.read_text() + "NoSuchDirective 1\n")
            server.signal(signal.SIGUSR1)
            reloading = notify.wait("RELOADING", after=ready + 1)
            notify.wait("READY", after=reloading + 1)  # the running configuration serves on
            assert call(server, "GET", "/")[0] == 200
    finally:
        notify.close()


ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.mark.slow
@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate (Debian systemd) missing")
@pytest.mark.parametrize("mpm", MPMS)
def test_socket_activation_serves_the_inherited_socket_across_graceful_restarts(tmp_path, mpm):
    port = free_port()
    extra = free_port()  # passed by systemd but named by no Listen: warned about and closed
    # systemd-socket-activate passes on only the variables -E names: the tree under test too
    launcher = (ACTIVATE, "-E", "PYTHONPATH", "-l", f"127.0.0.1:{port}", "-l", f"127.0.0.1:{extra}")
    server = Server(tmp_path, "WSGIApp / testapp:info\n", mpm=mpm, launcher=launcher)
    server.port = port  # the Listen must name the port systemd passes
    conf = server.conf.read_text().splitlines()
    conf = [f"Listen 127.0.0.1:{port}" if line.startswith("Listen ") else line for line in conf]
    server.conf.write_text("\n".join(conf) + "\n")
    with server:
        inode = _socket_inode(server.pid, port)
        assert inode is not None  # the parent holds systemd's socket
        assert call(server, "GET", "/")[0] == 200
        log = server.log_text()
        assert "MP00255: systemd passed a socket" in log and str(extra) in log
        server.signal(signal.SIGUSR1)
        wait_for(lambda: "resuming normal operations" in server.log_text().split("SIGUSR1")[-1])
        assert call(server, "GET", "/")[0] == 200
        assert _socket_inode(server.pid, port) == inode  # the same socket, never re-bound


def _socket_inode(pid: int, port: int) -> str | None:
    """The inode of the listening socket on 127.0.0.1:`port` if process `pid` holds it."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed since the listing (the parent's own files)
            continue
        if target.startswith("socket:["):
            held.add(target[8:-1])
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            if fields[1] == wanted and fields[3] == "0A" and fields[9] in held:
                return fields[9]
    return None
