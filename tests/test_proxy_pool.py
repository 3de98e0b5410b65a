"""handlers/proxy/pool.py against a real listening socket: max, smax, min, ttl, acquire,
disablereuse, keepalive, timeouts, and idle connections the back end closed."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from mpmd.handlers.proxy.pool import ConnectionPool, PoolTimeout
from proxy_doubles import member


class Listener:
    """Accepts and keeps connections so the test can close them from the back end's side."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []

    def take(self) -> socket.socket:
        conn, _ = self.sock.accept()
        self.accepted.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(listener, clock=None, threads=4, **params) -> ConnectionPool:
    return ConnectionPool(
        member(listener.port, **params), threads=threads, timeout=7.0, clock=clock or Clock()
    )


def test_reuse_and_socket_options(listener):
    pool = _pool(listener, keepalive=True, connection_timeout=2.0)
    conn = pool.acquire()
    assert conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    assert conn.sock.gettimeout() == 7.0 and pool.connect_timeout == 2.0
    pool.release(conn, reusable=True)
    again = pool.acquire()
    assert again is conn and again.reused
    pool.release(again, reusable=False)
    assert pool.idle == 0
    pool.close()


def test_disablereuse_and_unreusable_close(listener):
    pool = _pool(listener, reuse=False)
    conn = pool.acquire()
    pool.release(conn, reusable=True)
    assert pool.idle == 0 and conn.sock.fileno() == -1


def test_idle_connection_closed_by_backend_is_not_handed_out(listener):
    pool = _pool(listener)
    conn = pool.acquire()
    backend_side = listener.take()
    pool.release(conn, reusable=True)
    backend_side.close()  # the back end's keep-alive timeout while the connection is idle
    poll_until_readable(conn.sock)
    fresh = pool.acquire()
    assert fresh is not conn and not fresh.reused
    pool.release(fresh, reusable=False)


def poll_until_readable(sock: socket.socket) -> None:
    import select

    assert select.select([sock], [], [], 10)[0]


def test_max_and_acquire_timeout(listener):
    pool = _pool(listener, time.monotonic, max=1, acquire=0.05)
    conn = pool.acquire()
    with pytest.raises(PoolTimeout):
        pool.acquire()
    pool.release(conn, reusable=True)
    assert pool.acquire() is conn


def test_a_waiting_acquire_gets_the_released_connection(listener):
    pool = _pool(listener, max=1)
    conn = pool.acquire()
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire()))
    waiter.start()
    pool.release(conn, reusable=True)
    waiter.join(10)
    assert got == [conn]


def test_smax_bounds_idle_connections_without_ttl(listener):
    pool = _pool(listener, max=3, smax=1)
    first, second = pool.acquire(), pool.acquire()
    pool.release(first, reusable=True)
    pool.release(second, reusable=True)
    assert pool.idle == 1


def test_ttl_expires_idle_connections_keeping_min(listener):
    clock = Clock()
    pool = _pool(listener, clock, ttl=5.0, min=1)
    conns = [pool.acquire() for _ in range(3)]
    for conn in conns:
        pool.release(conn, reusable=True)
    assert pool.idle == 3
    clock.now += 6
    newest = pool.acquire()  # expiry runs first: one idle kept (min), handed out
    assert newest is conns[-1] and pool.idle == 0
    assert conns[0].sock.fileno() == -1 and conns[1].sock.fileno() == -1


def test_prefork_pool_holds_one_connection(listener):
    pool = _pool(listener, threads=1)
    assert pool.max == 1 and pool.smax == 1


def test_connect_error_frees_the_slot():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = ConnectionPool(member(port, max=1), threads=1, timeout=1.0)
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            pool.acquire()
