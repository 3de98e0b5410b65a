"""Static files through the router: 200/304/206/multipart/416/HEAD/405/301, indexes, traversal."""

from __future__ import annotations

import os
import re
from email.utils import formatdate

import pytest

from helpers import FakeErrorLog, make_config, make_vhost, route
from mpmd.config.model import DirectorySection
from mpmd.handlers.router import Router
from mpmd.handlers.static import MimeTable, default_mime_table, parse_ranges

SECRET = "outside-secret-contents"


@pytest.fixture
def site(tmp_path):
    """A docroot with files, a sub-directory with an index, a listable one, and links out."""
    root = tmp_path / "htdocs"
    root.mkdir()
    (root / "a.txt").write_text("hello\n")
    (root / "page.html").write_text("<p>x</p>")
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)
    (root / "noext").write_text("x")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<p>index</p>")
    (root / "list").mkdir()
    (root / "list" / "a<b>.txt").write_text("x")
    (root / "list" / "z.html").write_text("z")
    (root / "list" / "dir").mkdir()
    (root / "nolist").mkdir()
    (root / "nolist" / "f.txt").write_text("f")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "link-out.txt").symlink_to(outside / "secret.txt")
    (root / "nofollow").mkdir()
    (root / "nofollow" / "link-out.txt").symlink_to(outside / "secret.txt")
    (root / "nofollow" / "link-in.txt").symlink_to(root / "a.txt")
    (root / "nofollow" / "plain.txt").write_text("plain")
    (root / "nofollow" / "dirlink").symlink_to(outside)
    return root


def make_router(root, *, options=frozenset({"FollowSymLinks"})) -> Router:
    vhost = make_vhost(
        document_root=str(root),
        options=options,
        directories=(
            DirectorySection(str(root / "list"), False, frozenset({"Indexes"}), None, None, None),
            DirectorySection(str(root / "nofollow"), False, frozenset(), None, None, None),
        ),
    )
    return Router(make_config(vhost), FakeErrorLog())


def get(router, target, method="GET", **headers):
    pairs = [("host", "www.example:8080")] + [
        (k.replace("_", "-").lower(), v) for k, v in headers.items()
    ]
    return route(router, method, target, headers=pairs)


# -- plain files ------------------------------------------------------------------------------------


def test_file_with_validators_and_sendfile(site):
    router = make_router(site)
    response, exchange = get(router, "/a.txt")
    st = os.stat(site / "a.txt")
    assert response.status == 200
    assert response.body == b"hello\n"
    assert response.header("Content-Type") == "text/plain"  # no charset, as Apache
    assert response.header("Content-Length") == "6"
    assert response.header("Accept-Ranges") == "bytes"
    assert response.header("ETag") == f'"{st.st_size:x}-{st.st_mtime_ns // 1000:x}"'
    assert response.header("Last-Modified") == formatdate(int(st.st_mtime), usegmt=True)
    assert exchange.notes["filename"] == str(site / "a.txt")
    assert exchange.keep_alive


def test_mime_types_and_unknown_extension(site):
    router = make_router(site)
    assert get(router, "/page.html")[0].header("Content-Type") == "text/html"
    assert get(router, "/data.bin")[0].header("Content-Type") == "application/octet-stream"
    assert get(router, "/noext")[0].header("Content-Type") is None  # Apache sends none
    table = default_mime_table()
    assert table.type_for("x.CSS") == "text/css"
    assert table.type_for("x.js") == "text/javascript"
    assert table.type_for("index.html.en") == "text/html"
    assert table.type_for("archive.tar.gz") == "application/gzip"
    assert MimeTable("").type_for("a.png") == "image/png"  # Python's table as fallback


def test_head_same_headers_no_body(site):
    router = make_router(site)
    full, _ = get(router, "/a.txt")
    head, _ = get(router, "/a.txt", method="HEAD")
    assert head.status == 200
    assert head.header("Content-Length") == "6"
    assert head.header("ETag") == full.header("ETag")


def test_post_to_a_file_is_served_as_apache_does(site):
    router = make_router(site)
    response, exchange = route(
        router, "POST", "/a.txt", headers=[("host", "h")], body=b"field=value"
    )
    assert response.status == 200 and response.body == b"hello\n"
    assert exchange.request.body.read(10) == b""  # the body was drained


def test_other_methods_405_unknown_501_options_200(site):
    router = make_router(site)
    response, exchange = get(router, "/a.txt", method="PUT")
    assert response.status == 405
    assert response.header("Allow") == "GET,POST,OPTIONS,HEAD"
    assert exchange.keep_alive
    response, _ = get(router, "/nope.txt", method="DELETE")
    assert response.status == 405  # the method is refused before the lookup, as Apache
    response, exchange = get(router, "/a.txt", method="FOO")
    assert response.status == 501 and not exchange.keep_alive
    response, _ = get(router, "/a.txt", method="OPTIONS")
    assert response.status == 200 and response.header("Allow") == "GET,POST,OPTIONS,HEAD"
    assert response.body == b""


def test_missing_is_404(site):
    router = make_router(site)
    assert get(router, "/missing.txt")[0].status == 404
    assert get(router, "/a.txt/")[0].status == 404
    assert get(router, "/a.txt/more")[0].status == 404


def test_unreadable_is_403(site, monkeypatch):
    real_open = os.open

    def deny(path, flags, *args):
        if str(path).endswith("a.txt"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", deny)  # root reads everything, so refuse like the kernel
    router = make_router(site)
    response, _ = get(router, "/a.txt")
    assert response.status == 403 and b"hello" not in response.body


def test_fifo_is_refused_without_blocking(site):
    os.mkfifo(site / "pipe")
    router = make_router(site)
    assert get(router, "/pipe")[0].status == 403


# -- conditionals -----------------------------------------------------------------------------------


def test_if_none_match_and_if_modified_since(site):
    router = make_router(site)
    first, _ = get(router, "/a.txt")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    response, _ = get(router, "/a.txt", if_none_match=etag)
    assert response.status == 304 and response.header("ETag") == etag
    assert get(router, "/a.txt", if_none_match=f"W/{etag}")[0].status == 304
    assert get(router, "/a.txt", if_none_match=f'"other", {etag}')[0].status == 304
    assert get(router, "/a.txt", if_none_match="*")[0].status == 304
    assert get(router, "/a.txt", if_none_match='"other"')[0].status == 200
    assert get(router, "/a.txt", if_modified_since=modified)[0].status == 304
    older = formatdate(os.stat(site / "a.txt").st_mtime - 3600, usegmt=True)
    assert get(router, "/a.txt", if_modified_since=older)[0].status == 200
    # If-None-Match wins over If-Modified-Since
    assert get(router, "/a.txt", if_none_match='"x"', if_modified_since=modified)[0].status == 200
    assert get(router, "/a.txt", if_match='"x"')[0].status == 412
    assert get(router, "/a.txt", if_match=etag)[0].status == 200


# -- ranges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-1", 6, [(0, 1)]),
        ("bytes=-2", 6, [(4, 5)]),
        ("bytes=3-", 6, [(3, 5)]),
        ("bytes=0-100", 6, [(0, 5)]),
        ("bytes=0-1,1-2", 6, [(0, 2)]),
        ("bytes=0-1,2-3", 6, [(0, 3)]),
        ("bytes=0-1,4-5", 6, [(0, 1), (4, 5)]),
        ("bytes=0-1,10-20", 6, [(0, 1)]),
        ("bytes=10-20", 6, []),
        ("bytes=9-", 6, []),
        ("bytes=0-0", 0, []),
        ("bytes=-0", 6, []),
        ("bytes=x", 6, None),
        ("bytes=5-1", 6, None),
        ("items=0-1", 6, None),
        ("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 402, 2)), 1000, None),
        ("bytes=\u00b2-", 6, None),  # str.isdigit() says yes, int() says no
        ("bytes=" + "9" * 5000 + "-", 6, None),  # past int()'s 4,300 digits
        ("bytes=0-" + "9" * 30, 6, None),
    ],
)
def test_parse_ranges(header, size, expected):
    assert parse_ranges(header, size) == expected


def test_single_range_206(site):
    router = make_router(site)
    response, _ = get(router, "/a.txt", range="bytes=1-2")
    assert response.status == 206
    assert response.body == b"el"
    assert response.header("Content-Range") == "bytes 1-2/6"
    head, _ = get(router, "/a.txt", method="HEAD", range="bytes=1-2")
    assert head.status == 206 and head.header("Content-Length") == "2"


def test_multiple_ranges_multipart(site):
    router = make_router(site)
    data = (site / "data.bin").read_bytes()
    response, _ = get(router, "/data.bin", range="bytes=0-9,100-199,-5")
    assert response.status == 206
    match = re.fullmatch(r"multipart/byteranges; boundary=(\w+)", response.header("Content-Type"))
    assert match
    boundary = match.group(1).encode()
    parts = response.body.split(b"\r\n--" + boundary)
    assert parts[0] == b"" and parts[-1] == b"--\r\n"
    got = []
    for part in parts[1:-1]:
        head, _, payload = part.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        assert lines[0] == "Content-type: application/octet-stream"
        first, last, size = map(
            int, re.fullmatch(r"Content-range: bytes (\d+)-(\d+)/(\d+)", lines[1]).groups()
        )
        assert size == len(data) and payload == data[first : last + 1]
        got.append((first, last))
    assert got == [(0, 9), (100, 199), (len(data) - 5, len(data) - 1)]


def test_unsatisfiable_range_416(site):
    router = make_router(site)
    response, _ = get(router, "/a.txt", range="bytes=10-20")
    assert response.status == 416
    assert response.header("Content-Range") == "bytes */6"
    assert b"hello" not in response.body


def test_if_range(site):
    router = make_router(site)
    first, _ = get(router, "/a.txt")
    etag, modified = first.header("ETag"), first.header("Last-Modified")
    assert get(router, "/a.txt", range="bytes=0-1", if_range=etag)[0].status == 206
    assert get(router, "/a.txt", range="bytes=0-1", if_range='"stale"')[0].status == 200
    assert get(router, "/a.txt", range="bytes=0-1", if_range=f"W/{etag}")[0].status == 200
    assert get(router, "/a.txt", range="bytes=0-1", if_range=modified)[0].status == 206
    older = formatdate(0, usegmt=True)
    assert get(router, "/a.txt", range="bytes=0-1", if_range=older)[0].body == b"hello\n"


def test_bad_range_syntax_sends_whole_file(site):
    response, _ = get(make_router(site), "/a.txt", range="bytes=x")
    assert response.status == 200 and response.body == b"hello\n"


# -- directories ----------------------------------------------------------------------------------


def test_directory_without_slash_redirects(site):
    router = make_router(site)
    response, _ = get(router, "/sub")
    assert response.status == 301
    assert response.header("Location") == "http://www.example:8080/sub/"
    response, _ = route(router, "GET", "/sub?x=1", headers=[("host", "h")])
    assert response.header("Location") == "http://h/sub/?x=1"


def test_directory_index(site):
    router = make_router(site)
    response, exchange = get(router, "/sub/")
    assert response.status == 200 and response.body == b"<p>index</p>"
    assert response.header("Content-Type") == "text/html"
    assert exchange.notes["filename"].endswith("sub/index.html")


def test_listing_only_with_indexes_and_names_escaped(site):
    router = make_router(site)
    response, _ = get(router, "/list/")
    assert response.status == 200
    body = response.body.decode()
    assert "<title>Index of /list</title>" in body
    assert '<a href="a%3Cb%3E.txt"> a&lt;b&gt;.txt</a>' in body
    assert '<a href="dir/"> dir/</a>' in body
    assert '<a href="/"> Parent Directory</a>' in body
    assert "<b>" not in body
    assert get(router, "/nolist/")[0].status == 403
    assert get(router, "/")[0].status == 403  # no index.html, no Indexes


# -- traversal and links --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/../outside/secret.txt", 400),
        ("/sub/../../outside/secret.txt", 400),
        ("/%2e%2e/outside/secret.txt", 400),
        ("/%2E%2E%2f..%2foutside/secret.txt", 404),
        ("/..%2Foutside/secret.txt", 404),
        ("/a.txt%00.html", 404),
        ("/%00", 404),
    ],
)
def test_traversal_never_leaks(site, target, status):
    response, _ = get(make_router(site), target)
    assert response.status == status
    assert SECRET.encode() not in response.body


def test_symlinks_follow_only_with_followsymlinks(site):
    router = make_router(site)
    response, _ = get(router, "/link-out.txt")
    assert response.status == 200 and response.body == SECRET.encode()  # Apache's default
    for target in (
        "/nofollow/link-out.txt",
        "/nofollow/link-in.txt",
        "/nofollow/dirlink/secret.txt",
    ):
        response, _ = get(router, target)
        assert response.status == 403, target
        assert SECRET.encode() not in response.body
    assert get(router, "/nofollow/plain.txt")[0].body == b"plain"


def test_symlinks_refused_everywhere_without_the_option(site):
    router = make_router(site, options=frozenset())
    response, _ = get(router, "/link-out.txt")
    assert response.status == 403 and SECRET.encode() not in response.body
    assert get(router, "/a.txt")[0].body == b"hello\n"


def test_docroot_behind_a_symlink_still_serves(tmp_path, site):
    alias_root = tmp_path / "docroot-link"
    alias_root.symlink_to(site)
    router = make_router(alias_root, options=frozenset())
    assert get(router, "/a.txt")[0].body == b"hello\n"
