"""The record layer both TLS transports share: an `ssl.SSLObject` over two MemoryBIOs.

The event loop's connections (event_tls.py) and prefork's and worker's (tls_connection.py)
do their own socket I/O and give OpenSSL only memory: what the socket delivered goes into the
incoming BIO, and one read decrypts all of it. What is left there afterwards is at most part
of a record, which needs more bytes from the socket: neither epoll nor a blocking read can
miss plaintext that OpenSSL holds.
"""

from __future__ import annotations

import ssl

READ_SIZE = 65536  # bytes of plaintext asked of OpenSSL per read
TLS_CHUNK = 65536  # plaintext encrypted at a time: the most ciphertext held in memory at once


class TlsRecords:
    """Decryption for a connection whose subclass declares `bio_in`, `bio_out`, `sslobj` (the
    SSLObject's C object: read and pending without the wrapper's frame) and `eof`, and says
    how to send what reading made OpenSSL write (`_answer_reading`)."""

    __slots__ = ()
    bio_in: ssl.MemoryBIO
    bio_out: ssl.MemoryBIO
    sslobj: ssl.SSLObject
    eof: bool

    def _answer_reading(self) -> None:
        """Send what OpenSSL wrote while reading (an alert, a key update's answer)."""
        raise NotImplementedError

    def _decrypt(self) -> bytes:
        """All the plaintext the incoming BIO holds; b"" with `eof` set after close_notify,
        b"" alone when only part of a record is in. Raises ssl.SSLError on a broken record."""
        obj = self.sslobj
        try:
            data = obj.read(READ_SIZE)
        except ssl.SSLWantReadError:
            data = b""  # part of a record, which needs more bytes from the socket
        else:
            if not data:  # close_notify
                self.eof = True
            elif self.bio_in.pending or obj.pending():  # more than one record came
                data = self._decrypt_rest(data)
        if self.bio_out.pending:
            self._answer_reading()
        return data

    def _decrypt_rest(self, first: bytes) -> bytes:
        """`first` and the plaintext of the records after it (all of them, or up to the part
        of one the socket has not delivered yet: SSLWantReadError, costly, only then)."""
        chunks = [first]
        obj = self.sslobj
        bio_in = self.bio_in
        try:
            while chunk := obj.read(READ_SIZE):
                chunks.append(chunk)
                if not bio_in.pending and not obj.pending():
                    break
            else:
                self.eof = True  # close_notify
        except ssl.SSLWantReadError:
            pass
        return b"".join(chunks)
