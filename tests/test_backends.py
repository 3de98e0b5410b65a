"""The proxy tests' back ends themselves (tests/backends.py): each answers with its name, a
killed one refuses connections, a restarted one answers again on its port, and nothing is left
running once the context exits."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
from pathlib import Path

import pytest

from backends import (
    Gate,
    MpmdBackends,
    NginxBackends,
    http_get,
    nginx_each,
    parse_echo,
    refuses,
    sha256_file,
)
from server import pid_alive, wait_for


def _put(port: int, path: str, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PUT", path, body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _read_until(sock: socket.socket, data: bytes, marker: bytes) -> bytes:
    while marker not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError(f"closed before {marker!r}: {data!r}")
        data += piece
    return data


def test_nginx_backends_answer_with_their_names(tmp_path: Path) -> None:
    with NginxBackends(3, tmp_path, big_size=3 << 20) as backends:
        for i, port in enumerate(backends.ports):
            for path in ("/", "/hello"):
                status, headers, body = http_get(port, path)
                assert (status, headers["X-Backend"], body) == (
                    200,
                    f"backend-{i}",
                    b"backend-%d\n" % i,
                )
        echoed = parse_echo(
            http_get(
                backends.ports[1], "/echo-headers", {"X-Forwarded-For": "10.0.0.1", "Via": "1.1 a"}
            )[2]
        )
        assert echoed["request"] == "GET /echo-headers HTTP/1.1"
        assert echoed["x-forwarded-for"] == "10.0.0.1" and echoed["via"] == "1.1 a"
        assert (
            echoed["host"] == f"127.0.0.1:{backends.ports[1]}" and echoed["x-forwarded-host"] == ""
        )
        status, headers, body = http_get(backends.ports[2], "/big")
        assert status == 200 and hashlib.sha256(body).hexdigest() == backends.big_sha256
        assert len(body) == 3 << 20
        upload = os.urandom(2 << 20)
        assert _put(backends.ports[0], "/upload/a.bin", upload) == 201
        assert sha256_file(backends.uploaded(0, "a.bin")) == hashlib.sha256(upload).hexdigest()
        status, headers, _ = http_get(backends.ports[2], "/cookie")
        assert headers.get_all("Set-Cookie") == [
            "ROUTEID=s.backend-2; Path=/",
            "JSESSIONID=s.backend-2; Path=/",
        ]
        pid = backends.pid
    assert not pid_alive(pid)
    assert all(refuses(port) for port in backends.ports)


def test_nginx_backend_killed_refuses_then_restarts(tmp_path: Path) -> None:
    with nginx_each(2, tmp_path) as (first, second):
        conn = http.client.HTTPConnection("127.0.0.1", first.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"backend-0\n"
        killed = first.pid
        first.kill()
        assert not pid_alive(killed) and refuses(first.port)
        with pytest.raises((ConnectionError, http.client.HTTPException)):  # the kept-alive one
            conn.request("GET", "/")
            conn.getresponse().read()
        conn.close()
        assert http_get(second.port)[2] == b"backend-1\n"  # the others go on
        first.restart()
        assert first.pid != killed and http_get(first.port)[1]["X-Backend"] == "backend-0"
        pids = [first.pid, second.pid]
    assert not any(pid_alive(pid) for pid in pids)
    assert refuses(first.port) and refuses(second.port)


@pytest.mark.slow
def test_mpmd_backends(tmp_path: Path) -> None:
    with MpmdBackends(2, tmp_path) as backends:
        for i, port in enumerate(backends.ports):
            status, headers, body = http_get(port, "/hello")
            assert (status, headers["X-Backend"], body) == (
                200,
                f"backend-{i}",
                b"backend-%d\n" % i,
            )
        assert http_get(backends.ports[0], "/status?code=503")[0] == 503
        echoed = parse_echo(http_get(backends.ports[0], "/echo-headers", {"X-Test": "yes"})[2])
        assert echoed["x-test"] == "yes" and echoed["request"] == "GET /echo-headers"
        upload = os.urandom(1 << 20)
        conn = http.client.HTTPConnection("127.0.0.1", backends.ports[1], timeout=10)
        conn.request("POST", "/upload", body=upload)
        digest = hashlib.sha256(upload).hexdigest()
        assert conn.getresponse().read() == f"sha256={digest} length={1 << 20}\n".encode()
        conn.close()

        gate = Gate(tmp_path, "held")
        held = socket.create_connection(("127.0.0.1", backends.ports[0]), timeout=10)
        held.sendall(f"GET {gate.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        gate.wait_entered()
        gate.release()
        assert b"backend-0 released" in _read_until(held, b"", b"released")
        held.close()

        chunks = tmp_path / "chunks"
        chunks.mkdir()
        with socket.create_connection(("127.0.0.1", backends.ports[1]), timeout=10) as sock:
            sock.sendall(f"GET /stream?chunks=2&gate={chunks} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            (chunks / "0").touch()
            data = _read_until(sock, b"", b"chunk 0\n")
            assert b"transfer-encoding: chunked" in data.lower() and b"chunk 1" not in data
            (chunks / "1").touch()
            _read_until(sock, data, b"\r\n0\r\n\r\n")

        killed = backends.servers[0].pid
        backends.kill(0)
        assert not pid_alive(killed)
        wait_for(lambda: refuses(backends.ports[0]), timeout=5)  # a loaded machine may be slow
        assert http_get(backends.ports[1])[2] == b"backend-1\n"
        backends.restart(0)
        assert http_get(backends.ports[0])[2] == b"backend-0\n"
        pids = [server.pid for server in backends.servers]
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5)
    assert all(refuses(port) for port in backends.ports)
