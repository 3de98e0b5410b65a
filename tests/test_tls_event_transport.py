"""The event MPM's TLS transport (mpm/event_tls.py) on a real loopback connection.

The server side is a TlsConnection driven step by step as the loop drives it; the client is an
SSLObject over MemoryBIOs whose bytes the test carries over the socket itself, so which bytes
arrive together (the handshake's end with a request, two requests in one read) is exact.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import threading

import pytest

from helpers import make_config
from mpmd.mpm.context import ChildContext
from mpmd.mpm.event_tls import TlsConnection

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    return server, client


class Client:
    """A TLS client whose records the test moves over a blocking socket by hand."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.sock = sock
        self.bio_in = ssl.MemoryBIO()
        self.bio_out = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.bio_in, self.bio_out, server_hostname="localhost")

    def step_handshake(self) -> bool:
        try:
            self.obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def send_pending(self) -> None:
        self.sock.sendall(self.bio_out.read())

    def receive(self) -> None:
        """Take one read's worth of records from the socket."""
        data = self.sock.recv(1 << 20)
        assert data, "the server closed"
        self.bio_in.write(data)

    def read_plain(self) -> bytes:
        chunks = []
        try:
            while chunk := self.obj.read(1 << 16):
                chunks.append(chunk)
        except ssl.SSLWantReadError:
            pass
        return b"".join(chunks)


@pytest.fixture
def pair(contexts):
    """(server TlsConnection, Client), connected over TCP on 127.0.0.1."""
    server_context, client_context = contexts
    listener = socket.create_server(("127.0.0.1", 0))
    client_sock = socket.socket()
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a writer must wait
    client_sock.settimeout(10)
    client_sock.connect(listener.getsockname())
    server_sock, peer = listener.accept()
    listener.close()
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    server_sock.settimeout(10)  # non-blocking at the OS level, as the loop keeps it
    ctx = ChildContext(make_config(), None, None, {}, multithread=True, multiprocess=True)
    conn = TlsConnection(server_sock, peer, ctx, server_context)
    yield conn, Client(client_sock, client_context)
    client_sock.close()
    conn.discard_output()
    server_sock.close()


def readable(conn: TlsConnection) -> None:
    assert select.select([conn.fd], [], [], 10)[0], "nothing arrived"


def handshake(conn: TlsConnection, client: Client, then: bytes = b"") -> None:
    """The whole handshake; the client's last flight carries `then` as application data."""
    assert not client.step_handshake()
    client.send_pending()
    readable(conn)
    assert conn.handshake() > 0
    assert not conn.handshaken and conn.out is None  # its flight went out at once
    client.receive()
    assert client.step_handshake()
    if then:
        client.obj.write(then)
    client.send_pending()  # Finished, and `then`, in one segment
    while not conn.handshaken:
        readable(conn)
        conn.handshake()


def test_a_request_sent_with_the_handshakes_end_is_read_without_the_socket(pair):
    """The request arrived in the same read as the client's Finished: it sits in the incoming
    BIO, where epoll cannot see it, and the loop's next read returns it."""
    conn, client = pair
    head = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    handshake(conn, client, then=head)
    assert conn.read_now() == head


def test_pipelined_requests_are_decrypted_whole_then_reads_wait(pair):
    conn, client = pair
    handshake(conn, client)
    with pytest.raises(BlockingIOError):
        conn.read_now()  # nothing sent yet
    heads = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 50
    for start in range(0, len(heads), 100):  # one record each
        client.obj.write(heads[start : start + 100])
    client.send_pending()
    received = b""
    while len(received) < len(heads):
        readable(conn)
        try:
            received += conn.read_now()
        except BlockingIOError:
            pass
    assert received == heads
    assert not conn.ssl.pending()  # nothing decrypted left behind


def test_a_record_split_over_reads_waits_for_its_end(pair):
    conn, client = pair
    handshake(conn, client)
    client.obj.write(b"GET / HTTP/1.1\r\n\r\n")
    record = client.bio_out.read()
    client.sock.sendall(record[:5])
    readable(conn)
    with pytest.raises(BlockingIOError):
        conn.read_now()
    client.sock.sendall(record[5:])
    readable(conn)
    assert conn.read_now() == b"GET / HTTP/1.1\r\n\r\n"


def test_close_notify_and_eof_end_the_reads(pair):
    conn, client = pair
    handshake(conn, client)
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()
    client.send_pending()
    readable(conn)
    assert conn.read_now() == b""
    assert conn.read_now() == b""


def _drain(conn: TlsConnection, client: Client, size: int) -> bytes:
    """Read `size` plaintext bytes at the client while the server flushes what it queued."""
    received = bytearray()
    while len(received) < size:
        conn.flush()
        if select.select([client.sock], [], [], 0.05)[0]:
            client.receive()
            received += client.read_plain()
    assert conn.flush() and conn.out is None
    return bytes(received)


def test_a_large_response_is_encrypted_as_the_socket_takes_it(pair):
    conn, client = pair
    handshake(conn, client)
    body = os.urandom(3_000_000)  # far more than the socket buffers
    conn.queue(b"head")
    conn.queue(body)
    assert conn.out is not None  # the rest waits, plaintext, for the socket
    assert conn.out_bytes < len(body) + 200_000
    conn.queue(b"tail")  # queued behind: encrypted only after the body
    assert _drain(conn, client, len(body) + 8) == b"head" + body + b"tail"


def test_a_file_goes_through_tls_in_chunks(pair, tmp_path):
    conn, client = pair
    handshake(conn, client)
    data = os.urandom(2_500_000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    with open(path, "rb") as file:
        conn.queue(b"head")
        conn.sendfile(file.fileno(), 100, len(data) - 200)
    conn.queue(b"tail")
    received = _drain(conn, client, len(data) - 200 + 8)
    assert received == b"head" + data[100:-100] + b"tail"


def test_a_thread_reads_a_body_under_its_timeout(pair):
    """recv_within returns each record's plaintext as it arrives, and times out."""
    conn, client = pair
    handshake(conn, client)
    body = os.urandom(1_000_000)
    digest = hashlib.sha256()
    received = 0
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for start in range(0, len(body), 40_000):
                client.obj.write(body[start : start + 40_000])
                client.send_pending()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    while received < len(body):
        chunk = conn.recv_within(10)
        assert chunk
        digest.update(chunk)
        received += len(chunk)
    sender.join()
    assert not errors
    assert digest.digest() == hashlib.sha256(body).digest()
    with pytest.raises(TimeoutError):
        conn.recv_within(0.05)


def test_lingering_close_sends_close_notify(pair):
    conn, client = pair
    handshake(conn, client)
    conn.end_output()
    client.receive()
    assert client.read_plain() == b""  # close_notify: a clean end, not a truncation
    assert client.sock.recv(10) == b""  # then the TCP half-close
