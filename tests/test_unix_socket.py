"""Listen unix:PATH (an mpmd extension): curl --unix-socket against each MPM, the socket's
mode and owner, its life across graceful restarts and stops, and what is at the path already."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess

import pytest

from mpmd.config import directives as reg
from mpmd.config.model import ListenAddress
from mpmd.mpm import systemd
from mpmd.mpm.listeners import connection_addresses
from server import Server, wait_for

MPMS = ("prefork", "worker", "event")
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def _config(path, extra: str = "") -> str:
    return (
        f"Listen unix:{path}\nWSGIApp /addr testapp:addresses\n"
        "ExtendedStatus On\n<Location /server-status>\n  SetHandler server-status\n</Location>\n"
        f"{extra}"
    )


def curl(path, url: str = "http://localhost/addr", *headers: str) -> tuple[int, str]:
    """(status, body) of one request through the socket at `path`."""
    args = [CURL, "-s", "--max-time", "10", "--unix-socket", str(path), "-w", "\n%{http_code}"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=False).stdout
    body, _, code = out.rpartition("\n")
    return int(code or 0), body


# -- pure parts -------------------------------------------------------------------------------


def test_listen_parses_a_unix_path_beside_tcp_addresses():
    assert reg.parse_listen_address("unix:/run/mpmd/app.sock") == ListenAddress(
        "", 0, "/run/mpmd/app.sock"
    )
    assert reg.parse_listen_address("127.0.0.1:80") == ListenAddress("127.0.0.1", 80)
    assert str(ListenAddress("", 0, "/run/a.sock")) == "unix:/run/a.sock"
    assert str(ListenAddress("::1", 80)) == "[::1]:80"
    for bad, words in (("unix:", "needs the socket's path"), ("unix:/" + "x" * 107, "107")):
        with pytest.raises(reg.DirectiveValueError, match=words):
            reg.parse_listen_address(bad)


def test_accepted_unix_connection_has_gunicorns_addresses(tmp_path):
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            sock, peer = listener.accept()
            with sock:
                assert connection_addresses(sock, peer) == ("", 0, path, 80)


def test_systemd_adopts_a_unix_socket_by_its_path(tmp_path):
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen()
    wanted = ListenAddress("", 0, path)
    other = ListenAddress("", 0, str(tmp_path / "other.sock"))
    matched, warnings = systemd.adopt([ListenAddress("127.0.0.1", 80), other, wanted], [sock])
    assert matched == {wanted: sock} and warnings == []
    sock.close()


# -- the real server --------------------------------------------------------------------------


@needs_curl
@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_curl_through_the_socket(tmp_path, mpm):
    path = tmp_path / "app.sock"
    with Server(tmp_path, _config(path), mpm=mpm) as server:
        status, body = curl(path)
        assert status == 200, server.log_text()
        facts = json.loads(body)
        # gunicorn's REMOTE_ADDR for an unnamed Unix client, no REMOTE_PORT; port 80 (http)
        assert facts["REMOTE_ADDR"] == "" and facts["REMOTE_PORT"] is None
        assert facts["SERVER_PORT"] == "80" and facts["SERVER_NAME"] == "localhost"
        assert facts["SERVER_ADDR"] == str(path)
        status, page = curl(path, "http://localhost/server-status")
        assert status == 200  # its own row: client "-", as %h logs it
        assert "<td>-</td><td>HTTP/1.1</td>" in page
        line = wait_for(lambda: [ln for ln in server.access_log.read_text().splitlines()
                                 if "/addr" in ln])[0]  # fmt: skip
        assert line.startswith("- - - [")  # %h is "-": no network address
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert not path.exists()  # removed on stop


@needs_curl
@pytest.mark.slow
def test_mode_and_owner(tmp_path):
    path = tmp_path / "app.sock"
    user = pwd.getpwnam("nobody")
    group = grp.getgrgid(user.pw_gid)
    owner = f"ListenUnixOwner nobody:{group.gr_name}\n" if os.geteuid() == 0 else ""
    with Server(tmp_path, _config(path, f"ListenUnixMode 0640\n{owner}")):
        info = os.lstat(path)
        assert stat.S_IMODE(info.st_mode) == 0o640
        if owner:
            assert (info.st_uid, info.st_gid) == (user.pw_uid, user.pw_gid)
        assert curl(path)[0] == 200  # root may connect whatever the mode


@needs_curl
@pytest.mark.slow
def test_default_mode_lets_any_local_user_connect(tmp_path):
    path = tmp_path / "app.sock"
    with Server(tmp_path, _config(path)):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o666


@needs_curl
@pytest.mark.slow
@pytest.mark.parametrize("preload", ["Off", "On"])  # On: the parent re-execs on a restart
def test_kept_across_graceful_restart_and_removed_on_graceful_stop(tmp_path, preload):
    path = tmp_path / "app.sock"
    with Server(tmp_path, _config(path, f"WSGIPreload {preload}\n"), mpm="event") as server:
        inode = os.lstat(path).st_ino
        first = json.loads(curl(path)[1])["pid"]
        server.signal(signal.SIGUSR1)
        wait_for(lambda: server.log_text().count("resuming normal operations") >= 2)
        # a new generation answers through the very same socket
        wait_for(lambda: json.loads(curl(path)[1])["pid"] != first)
        assert os.lstat(path).st_ino == inode
        server.signal(signal.SIGWINCH)  # graceful-stop
        server.proc.wait(timeout=15)
    assert not path.exists()


@needs_curl
@pytest.mark.slow
def test_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a crashed server's socket: the file stays, nobody listens
    stale.close()
    with Server(tmp_path, _config(path)):
        assert curl(path)[0] == 200


def _start_fails(tmp_path, path) -> str:
    server = Server(tmp_path, _config(path))
    server.start(wait=False)
    try:
        server.proc.wait(timeout=15)
    finally:
        server.stop()
    assert server.proc.returncode == 1
    return server.output()


@pytest.mark.slow
def test_a_file_at_the_path_is_refused_and_kept(tmp_path):
    path = tmp_path / "app.sock"
    path.write_text("precious\n")
    output = _start_fails(tmp_path, path)
    assert "AH00072: make_sock: could not bind to address unix:" in output
    assert f"MP00270: {path} exists and is not a socket" in output
    assert path.read_text() == "precious\n"


@pytest.mark.slow
def test_a_live_socket_is_not_taken_over(tmp_path):
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(path))
        other.listen()
        output = _start_fails(tmp_path, path)
        assert "(98)Address already in use: AH00072" in output
        assert path.exists()


@pytest.mark.slow
def test_missing_directory_is_a_bind_error(tmp_path):
    output = _start_fails(tmp_path, tmp_path / "missing" / "app.sock")
    assert "(2)No such file or directory: AH00072" in output


ACTIVATE = shutil.which("systemd-socket-activate")


@needs_curl
@pytest.mark.slow
@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate (Debian systemd) missing")
def test_socket_activation_of_a_unix_socket_is_adopted_and_left_to_systemd(tmp_path):
    path = tmp_path / "app.sock"
    port = Server(tmp_path, "").port  # the TCP Listen the test's readiness check uses
    # systemd-socket-activate passes on only the variables -E names: this tree's PYTHONPATH
    keep = ("-E", f"PYTHONPATH={os.environ['PYTHONPATH']}") if "PYTHONPATH" in os.environ else ()
    launcher = (ACTIVATE, *keep, "-l", str(path), "-l", f"127.0.0.1:{port}")
    server = Server(tmp_path, _config(path), launcher=launcher)
    server.port = port
    conf = server.conf.read_text().splitlines()
    conf = [f"Listen 127.0.0.1:{port}" if line.startswith("Listen 127") else line for line in conf]
    server.conf.write_text("\n".join(conf) + "\n")
    with server:
        inode = os.lstat(path).st_ino
        assert curl(path)[0] == 200
        assert "MP00255" not in server.log_text()  # matched to `Listen unix:` by its path
    assert os.lstat(path).st_ino == inode  # systemd's socket: mpmd does not remove it


def test_dump_shows_the_socket_and_reads_back(tmp_path, capsys):
    from mpmd.cli import main

    conf = tmp_path / "a.conf"
    conf.write_text(f"Listen unix:{tmp_path}/a.sock\nListen 8080\nListenUnixMode 0660\n"
                    "ListenUnixOwner :#0\nListenCoresBucketsRatio 1\n")  # fmt: skip
    assert main(["-S", "-f", str(conf)]) == 0
    dump = capsys.readouterr().out
    assert f"Listen unix:{tmp_path}/a.sock\nListen 8080\nListenUnixMode 0660\n" in dump
    assert "ListenUnixOwner :#0\n" in dump
    again = tmp_path / "again.conf"
    again.write_text(dump)
    assert main(["-t", "-f", str(again)]) == 0
    assert main(["-S", "-b", "unix:rel.sock", "-f", str(conf)]) == 0
    assert f"Listen unix:{os.getcwd()}/rel.sock\n" in capsys.readouterr().out


def _through_socket(path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.slow
@pytest.mark.parametrize("mpm", MPMS)
def test_proxy_protocol_over_the_socket_gives_the_real_client(tmp_path, mpm):
    """nginx's `proxy_protocol on` to mpmd's Unix socket: the header's source is the client."""
    path = tmp_path / "app.sock"
    with Server(
        tmp_path,
        _config(path, "RemoteIPProxyProtocol On\nRemoteIPProxyProtocolExceptions 127.0.0.1\n"),
        mpm=mpm,
    ) as server:
        request = b"GET /addr HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        answer = _through_socket(path, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 80\r\n" + request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:200]
        assert json.loads(body)["REMOTE_ADDR"] == "203.0.113.7"
        assert _through_socket(path, request) == b""  # no header: closed, as Apache
        assert server.log_text().count("AH") >= 1
        line = wait_for(lambda: [ln for ln in server.access_log.read_text().splitlines()
                                 if "/addr" in ln])[0]  # fmt: skip
        assert line.startswith("203.0.113.7 ")
