"""Sans-I/O HTTP/1.x: bytes in, requests out; responses in, bytes out. No sockets here."""
