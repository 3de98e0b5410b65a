"""TLS records as they arrive, against the real server, per MPM: every MPM's transport reads
the socket itself and gives OpenSSL only memory (mpm/tls_records.py), so it must serve a
request whose record came in the same read as the client's last handshake message, and one
whose record trickles in a byte at a time. The client is an SSLObject over MemoryBIOs, so the
test decides what each TCP write carries.
"""

from __future__ import annotations

import socket
import ssl

import pytest

from server import Server
from test_tls_serve import MPMS, _hosts, pki  # noqa: F401  (pki: the module's fixture)

REQUEST = b"GET /app HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


class MemoryClient:
    """A TLS client whose records are sent only when the test says so."""

    def __init__(self, port: int, ca_file: str) -> None:
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="a.test")

    def handshake(self) -> None:
        """Up to the client's Finished, which stays unsent in `outgoing`."""
        while True:
            try:
                self.obj.do_handshake()
                return
            except ssl.SSLWantReadError:
                self.raw.sendall(self.outgoing.read())
                data = self.raw.recv(65536)
                assert data, "the server closed during the handshake"
                self.incoming.write(data)

    def encrypt(self, plaintext: bytes) -> bytes:
        """What is unsent (the Finished, at first), then `plaintext` as records."""
        self.obj.write(plaintext)
        return self.outgoing.read()

    def read_to_end(self) -> bytes:
        answer = b""
        while data := self.raw.recv(65536):
            self.incoming.write(data)
            try:
                while chunk := self.obj.read(65536):
                    answer += chunk
            except ssl.SSLWantReadError:
                continue
            except ssl.SSLZeroReturnError:
                break
        return answer

    def close(self) -> None:
        self.raw.close()


def _answer(tmp_path, pki, mpm: str, send) -> bytes:  # noqa: F811
    """The server's answer to what `send(client)` sends once the client's handshake is done."""
    with Server(tmp_path, _hosts(pki), mpm=mpm) as server:
        client = MemoryClient(server.port, str(pki.ca_file))
        try:
            client.handshake()
            send(client)
            return client.read_to_end()
        finally:
            client.close()


@pytest.mark.parametrize("mpm", MPMS)
def test_a_request_that_came_with_the_clients_finished_is_answered(tmp_path, pki, mpm):  # noqa: F811
    def finished_and_request(client: MemoryClient) -> None:
        client.raw.sendall(client.encrypt(REQUEST))  # one write

    answer = _answer(tmp_path, pki, mpm, finished_and_request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert b'"HTTPS": "on"' in answer


@pytest.mark.parametrize("mpm", MPMS)
def test_a_request_record_sent_a_byte_at_a_time_is_answered(tmp_path, pki, mpm):  # noqa: F811
    def byte_by_byte(client: MemoryClient) -> None:
        client.raw.sendall(client.outgoing.read())  # the Finished alone
        record = client.encrypt(REQUEST)
        for k in range(len(record)):
            client.raw.send(record[k : k + 1])

    answer = _answer(tmp_path, pki, mpm, byte_by_byte)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
