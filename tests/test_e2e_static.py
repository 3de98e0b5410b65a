"""Static files through the real server, checked with curl: validators, ranges, traversal.

curl speaks to `mpmd -X` (and prefork) serving a DocumentRoot: 304 for If-None-Match and
If-Modified-Since, 206 for one range and multipart/byteranges for several, 416 for an
unsatisfiable range, HEAD with GET's headers, and every way out of the root (`/../`,
`%2e%2e`, `%2f`, `%00`, a symlink) answered 400/403/404 without a byte of the secret.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from server import Server

SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT"
BODY = bytes(range(32, 127)) * 40  # 3800 printable bytes, so slices are easy to read
MODES = {"X": ("-X",), "prefork": ("--mpm", "prefork")}

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class CurlResponse:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.lower()] = value.strip()


@pytest.fixture(scope="module", params=list(MODES))
def site(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("static")
    root = tmp / "htdocs"
    root.mkdir()
    (root / "file.txt").write_bytes(BODY)
    (root / "index.html").write_text("<h1>index</h1>\n")
    (root / "sub").mkdir()
    (root / "sub" / "inner.txt").write_text("inner\n")
    (tmp / "secret.txt").write_bytes(SECRET)
    (root / "link-out.txt").symlink_to(tmp / "secret.txt")
    (root / "linkdir").symlink_to(tmp)
    config = f'<Directory "{root}">\n    Options -FollowSymLinks\n</Directory>\n'
    config += "StartServers 1\nMinSpareServers 1\nMaxSpareServers 2\n"
    server = Server(tmp, config, args=MODES[request.param])
    try:
        server.start()
        yield server
    finally:
        server.stop()


def curl(server: Server, path: str, *args: str) -> CurlResponse:
    """`curl -s -i` (or -I for HEAD) against the server; the raw output parsed."""
    done = subprocess.run(
        ["curl", "-s", "-i", "--max-time", "5", *args, server.url(path)],
        capture_output=True,
        timeout=10,
        check=True,
    )
    return CurlResponse(done.stdout)


def test_get_has_validators_and_type(site: Server) -> None:
    resp = curl(site, "/file.txt")
    assert resp.status == 200 and resp.body == BODY
    assert resp.headers["content-length"] == str(len(BODY))
    assert resp.headers["content-type"].startswith("text/plain")
    assert resp.headers["etag"].startswith('"') and resp.headers["last-modified"].endswith("GMT")
    assert resp.headers["accept-ranges"] == "bytes"


def test_304_for_if_none_match_and_if_modified_since(site: Server) -> None:
    first = curl(site, "/file.txt")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    by_etag = curl(site, "/file.txt", "-H", f"If-None-Match: {etag}")
    assert (by_etag.status, by_etag.body) == (304, b"")
    assert by_etag.headers["etag"] == etag
    by_date = curl(site, "/file.txt", "-H", f"If-Modified-Since: {modified}")
    assert (by_date.status, by_date.body) == (304, b"")
    stale = curl(site, "/file.txt", "-H", 'If-None-Match: "not-the-etag"')
    assert stale.status == 200 and stale.body == BODY


def test_206_single_range(site: Server) -> None:
    resp = curl(site, "/file.txt", "-r", "10-19")
    assert resp.status == 206 and resp.body == BODY[10:20]
    assert resp.headers["content-range"] == f"bytes 10-19/{len(BODY)}"
    suffix = curl(site, "/file.txt", "-H", "Range: bytes=-5")
    assert suffix.status == 206 and suffix.body == BODY[-5:]


def test_multipart_byteranges(site: Server) -> None:
    resp = curl(site, "/file.txt", "-r", "0-4,100-109")
    assert resp.status == 206
    kind, _, boundary = resp.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/byteranges" and boundary
    parts = resp.body.split(b"--" + boundary.encode())
    assert parts[-1].strip() == b"--"
    bodies = []
    for part in parts[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        assert b"content-range: bytes " in head.lower()  # Apache spells it Content-range
        bodies.append(data[:-2] if data.endswith(b"\r\n") else data)
    assert bodies == [BODY[0:5], BODY[100:110]]
    assert resp.headers["content-length"] == str(len(resp.body))


def test_416_unsatisfiable_range(site: Server) -> None:
    resp = curl(site, "/file.txt", "-r", f"{len(BODY)}-")
    assert resp.status == 416
    assert resp.headers["content-range"] == f"bytes */{len(BODY)}"
    assert BODY[:20] not in resp.body


def test_head_same_headers_no_body(site: Server) -> None:
    get = curl(site, "/file.txt")
    head = curl(site, "/file.txt", "-I")
    assert head.status == 200 and head.body == b""
    for name in ("content-length", "content-type", "etag", "last-modified", "accept-ranges"):
        assert head.headers[name] == get.headers[name], name


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2e%2e/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/file.txt%00.html",
        "/..%00/secret.txt",
        "/link-out.txt",
        "/linkdir/secret.txt",
        "/sub/..%5c..%5csecret.txt",
    ],
)
def test_traversal_never_leaves_the_root(site: Server, path: str) -> None:
    resp = curl(site, path, "--path-as-is")
    assert resp.status in (400, 403, 404), (path, resp.status)
    assert SECRET not in resp.body
    assert curl(site, "/sub/inner.txt").body == b"inner\n"  # and it still serves


def test_secret_is_really_outside(site: Server) -> None:
    """The traversal targets exist (so a 404 above is the server's refusal, not luck)."""
    assert (site.tmp / "secret.txt").read_bytes() == SECRET
    assert os.path.realpath(site.tmp / "htdocs" / "link-out.txt") == str(site.tmp / "secret.txt")
