"""Static files as Apache's default handler, mod_dir and mod_autoindex serve them.

It owns the per-directory settings (Options, DirectoryIndex, Require from <Directory>), the
MIME table, conditional requests (ETag, Last-Modified → 304/412), byte ranges (206, multipart,
416), directory redirects, indexes and listings, and the symlink policy. It gets a path the
router already percent-decoded and normalised under a root, opens the file once, and hands the
open descriptor to exchange.sendfile(); it never reads a file into memory to send it, and never
serves anything outside the root unless `Options FollowSymLinks` allows a link to lead there.
"""

from __future__ import annotations

import errno
import fnmatch
import html
import mimetypes
import os
import re
import stat
from dataclasses import dataclass
from email.utils import formatdate, mktime_tz, parsedate_tz
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote

from mpmd.config.model import AccessRule, DirectorySection, VirtualHost
from mpmd.http.errors import HttpError
from mpmd.http.exchange import Exchange

# Apache's wording for the error documents mpmd shares with it.
NOT_FOUND_TEXT = "The requested URL was not found on this server."
FORBIDDEN_TEXT = "You don't have permission to access this resource."
BAD_REQUEST_TEXT = "Your browser sent a request that this server could not understand."
RANGE_TEXT = (
    "None of the range-specifier values in the Range\nrequest-header field overlap the "
    "current extent\nof the selected resource."
)

ALLOW = "GET,POST,OPTIONS,HEAD"  # Apache's default-handler list (TRACE is not supported)
_SERVED_METHODS = frozenset({"GET", "HEAD", "POST"})
# Methods Apache registers: on a static resource they get 405; anything else gets 501.
KNOWN_METHODS = frozenset(
    [
        "GET",
        "HEAD",
        "PUT",
        "POST",
        "DELETE",
        "CONNECT",
        "OPTIONS",
        "TRACE",
        "PATCH",
        "PROPFIND",
        "PROPPATCH",
        "MKCOL",
        "COPY",
        "MOVE",
        "LOCK",
        "UNLOCK",
        "VERSION-CONTROL",
        "CHECKOUT",
        "UNCHECKOUT",
        "CHECKIN",
        "UPDATE",
        "LABEL",
        "REPORT",
        "MKWORKSPACE",
        "MKACTIVITY",
        "BASELINE-CONTROL",
        "MERGE",
    ]
)
MAX_RANGES = 200  # Apache's MaxRanges default: more ranges than this → the whole file
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a FIFO never blocks
_DRAIN_BLOCK = 65536


# -- MIME types ---------------------------------------------------------------------------------


class MimeTable:
    """Extension → media type from an /etc/mime.types-style file, Python's table as fallback."""

    def __init__(self, table_text: str) -> None:
        self.types: dict[str, str] = {}
        for line in table_text.splitlines():
            fields = line.split("#", 1)[0].split()
            for ext in fields[1:]:
                self.types[ext.lower()] = fields[0]
        fallback = mimetypes.MimeTypes()
        for ext, media in fallback.types_map[True].items():
            self.types.setdefault(ext.lstrip(".").lower(), media)

    def type_for(self, name: str) -> str | None:
        """Type of the last extension that has one (mod_mime: later extensions win)."""
        parts = name.split(".")
        for ext in reversed(parts[1:]):
            media = self.types.get(ext.lower())
            if media is not None:
                return media
        return None


@cache
def default_mime_table() -> MimeTable:
    text = resources.files("mpmd").joinpath("mime.types").read_text(encoding="utf-8")
    return MimeTable(text)


# -- per-directory settings ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirSettings:
    """What the <Directory> sections say for one directory, merged in Apache's order."""

    options: frozenset[str]
    directory_index: tuple[str, ...]
    require: tuple[AccessRule, ...] | None
    handler: str | None


class DirectoryRules:
    """Merges a vhost's <Directory>/<DirectoryMatch> sections for a directory (cached)."""

    _CACHE_LIMIT = 4096

    def __init__(self, vhost: VirtualHost) -> None:
        self._base = DirSettings(vhost.options, vhost.directory_index, None, None)
        plain = [s for s in vhost.directories if not s.regex]
        # Apache applies plain sections shortest path first, then the regex ones in file order.
        plain.sort(key=lambda s: _components(s.path))
        self._sections: list[tuple[re.Pattern[str], DirectorySection]] = [
            (_directory_pattern(s.path), s) for s in plain
        ] + [(re.compile(s.path), s) for s in vhost.directories if s.regex]
        self._cache: dict[str, DirSettings] = {}

    def settings_for(self, directory: str) -> DirSettings:
        """Settings for the directory `directory` (an absolute path, no trailing slash)."""
        found = self._cache.get(directory)
        if found is not None:
            return found
        merged = self._base
        for pattern, section in self._sections:
            if pattern.search(directory) is None:
                continue
            merged = DirSettings(
                section.options if section.options is not None else merged.options,
                section.directory_index
                if section.directory_index is not None
                else merged.directory_index,
                section.require if section.require is not None else merged.require,
                section.handler if section.handler is not None else merged.handler,
            )
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[directory] = merged
        return merged


def _components(path: str) -> int:
    return len([p for p in path.split("/") if p])


def _directory_pattern(path: str) -> re.Pattern[str]:
    """A <Directory> path (wildcards allowed, `*` within one component) as a prefix regex."""
    path = path.rstrip("/")
    parts = []
    for part in path.split("/"):
        if any(c in part for c in "*?["):
            translated = fnmatch.translate(part)  # (?s:...)\Z
            translated = translated[: translated.rfind(r"\Z")]
            parts.append(translated.replace(".*", "[^/]*"))
        else:
            parts.append(re.escape(part))
    return re.compile("^" + "/".join(parts) + "(?:/|$)")


# -- conditional requests and ranges --------------------------------------------------------------


def _http_date(value: str) -> int | None:
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return mktime_tz(parsed)
    except (OverflowError, ValueError):
        return None


def _etag_in(header: str, etag: str, *, weak: bool) -> bool:
    """Is `etag` (strong) in the If-Match / If-None-Match list `header`?"""
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            if not weak:
                continue
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _is_offset(text: str) -> bool:
    """Empty, or ASCII digits that fit an off_t (int() would take `²` or 5,000 digits)."""
    return not text or (text.isascii() and text.isdigit() and len(text) <= 18)


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Byte ranges (first, last inclusive), merged as Apache does.

    None: ignore the header (bad syntax, too many ranges) and send the whole file.
    []: nothing satisfiable → 416.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        return None
    specs = spec.split(",")
    if len(specs) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for item in specs:
        first_text, dash, last_text = item.strip().partition("-")
        if not dash:
            return None
        first_text, last_text = first_text.strip(), last_text.strip()
        if not (_is_offset(first_text) and _is_offset(last_text)):
            return None  # not ASCII digits, or past any file size (Apache's strtoff fails)
        if not first_text:
            if not last_text:
                return None
            suffix = int(last_text)
            if suffix == 0:
                continue
            first, last = max(0, size - suffix), size - 1
        else:
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
            if last_text and last < first:
                return None
            last = min(last, size - 1)
        if first >= size:
            continue
        if ranges and first <= ranges[-1][1] + 1 and last >= ranges[-1][0] - 1:
            prev = ranges[-1]
            ranges[-1] = (min(prev[0], first), max(prev[1], last))
        else:
            ranges.append((first, last))
    return ranges


# -- the handler --------------------------------------------------------------------------------


def _fs_name(latin1_path: str) -> str:
    """The file-system str for a URL path decoded to latin-1 (the original bytes, fs-decoded)."""
    return latin1_path if latin1_path.isascii() else os.fsdecode(latin1_path.encode("latin-1"))


def location_url(exchange: Exchange, path: str) -> str:
    """Absolute URL for a redirect, using the Host the client sent (UseCanonicalName Off)."""
    host = exchange.request.header("host")
    if not host:
        vhost = exchange.vhost
        host = vhost.server_name if vhost.port in (80, 0) else f"{vhost.server_name}:{vhost.port}"
    return f"http://{host}{path}"


def discard_body(exchange: Exchange) -> bool:
    """Read and drop a request body the handler does not want; False if it was answered."""
    body = exchange.request.body
    try:
        while body.read(_DRAIN_BLOCK):
            pass
    except HttpError as exc:
        exchange.keep_alive = False
        exchange.send_error(exc.status)
        exchange.keep_alive = False
        return False
    return True


class StaticFiles:
    """Serves one vhost's files (DocumentRoot and Alias targets)."""

    def __init__(self, vhost: VirtualHost, error_log: Any, mime: MimeTable | None = None) -> None:
        self.vhost = vhost
        self.error_log = error_log
        self.mime = mime or default_mime_table()
        self.rules = DirectoryRules(vhost)
        self._real_roots: dict[str, str] = {}

    def serve(
        self, exchange: Exchange, root: str, fs_path: str, url_path: str, settings: DirSettings
    ) -> None:
        """Answer for `fs_path` (= root + the decoded URL path below the mount)."""
        method = exchange.request.method
        if method not in _SERVED_METHODS:
            self._refuse_method(exchange, method)
            return
        if not discard_body(exchange):
            return
        fd = self._open(exchange, root, fs_path, settings)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                fd = -1
                self._directory(exchange, root, fs_path, url_path, settings)
                return
            if not stat.S_ISREG(st.st_mode):
                self._error(
                    exchange, 403, f"file permissions deny server access: {fs_path}", "AH00132"
                )
                return
            self.send_file(exchange, fd, st, fs_path)
        finally:
            if fd >= 0:
                os.close(fd)

    # -- pieces ---------------------------------------------------------------------------------

    def _refuse_method(self, exchange: Exchange, method: str) -> None:
        if method == "OPTIONS":
            exchange.respond("200 OK", [("Allow", ALLOW)], b"")
        elif method in KNOWN_METHODS:
            exchange.send_error(
                405,
                f"The requested method {html.escape(method)} is not allowed for this URL.",
                [("Allow", ALLOW)],
            )
        else:
            exchange.keep_alive = False
            exchange.send_error(
                501,
                f"{html.escape(method)} not supported for current URL.<br />",
                [("Allow", ALLOW)],
            )
            exchange.keep_alive = False

    def _error(self, exchange: Exchange, status: int, log_message: str, ah: str) -> None:
        conn = exchange.conn
        self.error_log.log(
            "error",
            log_message,
            module="core",
            ah=ah,
            client=f"{conn.client_addr}:{conn.client_port}",
        )
        exchange.send_error(status, FORBIDDEN_TEXT if status == 403 else NOT_FOUND_TEXT)

    def _open(
        self, exchange: Exchange, root: str, fs_path: str, settings: DirSettings
    ) -> int | None:
        """Open once; 404/403 as Apache; refuse links the options do not allow to follow."""
        try:
            fd = os.open(fs_path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                self._error(
                    exchange, 403, f"file permissions deny server access: {fs_path}", "AH00132"
                )
            else:
                if self.error_log.enabled("info"):
                    self.error_log.log("info", f"File does not exist: {fs_path}", module="core")
                exchange.send_error(404, NOT_FOUND_TEXT)
            return None
        if "FollowSymLinks" not in settings.options and not self._within_root(root, fs_path):
            os.close(fd)
            self._error(
                exchange,
                403,
                f"Symbolic link not allowed or link target not accessible: {fs_path}",
                "AH00037",
            )
            return None
        return fd

    def _within_root(self, root: str, fs_path: str) -> bool:
        """True when no symbolic link lies between the root and `fs_path`."""
        real_root = self._real_roots.get(root)
        if real_root is None:
            real_root = self._real_roots[root] = os.path.realpath(root)
        lexical = os.path.normpath(real_root + "/" + fs_path[len(root) :])
        return os.path.realpath(fs_path) == lexical

    def send_file(self, exchange: Exchange, fd: int, st: os.stat_result, fs_path: str) -> None:
        """The 200/206/304/412/416 answer for an open regular file."""
        request = exchange.request
        size = st.st_size
        mtime = min(int(st.st_mtime), int(exchange.start_time))
        etag = f'"{size:x}-{st.st_mtime_ns // 1000:x}"'
        headers = [
            ("Last-Modified", formatdate(mtime, usegmt=True)),
            ("ETag", etag),
            ("Accept-Ranges", "bytes"),
        ]
        exchange.notes["filename"] = fs_path
        conditional = self._conditional_status(request, etag, mtime, exchange.start_time)
        if conditional == 304:
            exchange.start("304 Not Modified", headers)
            return
        if conditional == 412:
            exchange.send_error(412)
            return
        media = self.mime.type_for(os.path.basename(fs_path))
        range_header = request.header("range")
        ranges = None
        if range_header is not None and self._if_range_holds(request, etag, mtime):
            ranges = parse_ranges(range_header, size)
        if ranges is None:
            if media is not None:
                headers.append(("Content-Type", media))
            exchange.start("200 OK", headers)
            exchange.sendfile(fd, 0, size)
        elif not ranges:
            exchange.send_error(416, RANGE_TEXT, [("Content-Range", f"bytes */{size}")])
        elif len(ranges) == 1:
            first, last = ranges[0]
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
            if media is not None:
                headers.append(("Content-Type", media))
            exchange.start("206 Partial Content", headers)
            exchange.sendfile(fd, first, last - first + 1)
        else:
            self._multipart(exchange, fd, headers, ranges, size, media)

    @staticmethod
    def _conditional_status(request: Any, etag: str, mtime: int, now: float) -> int:
        """RFC 9110 section 13.2.2 order, as ap_meets_conditions: 0, 304 or 412."""
        if_match = request.header("if-match")
        if if_match is not None:
            if not _etag_in(if_match, etag, weak=False):
                return 412
        else:
            ius = request.header("if-unmodified-since")
            if ius is not None:
                when = _http_date(ius)
                if when is not None and mtime > when:
                    return 412
        if_none_match = request.header("if-none-match")
        if if_none_match is not None:
            if _etag_in(if_none_match, etag, weak=True):
                return 304 if request.method in ("GET", "HEAD") else 412
            return 0
        ims = request.header("if-modified-since")
        if ims is not None and request.method in ("GET", "HEAD"):
            when = _http_date(ims)
            if when is not None and when <= now and mtime <= when:
                return 304
        return 0

    @staticmethod
    def _if_range_holds(request: Any, etag: str, mtime: int) -> bool:
        if_range = request.header("if-range")
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith('"') or if_range.startswith("W/"):
            return if_range == etag  # a strong comparison; weak validators never match
        return _http_date(if_range) == mtime

    @staticmethod
    def _multipart(
        exchange: Exchange,
        fd: int,
        headers: list[tuple[str, str]],
        ranges: list[tuple[int, int]],
        size: int,
        media: str | None,
    ) -> None:
        boundary = os.urandom(8).hex()
        type_line = f"Content-type: {media}\r\n" if media is not None else ""
        parts = [
            f"\r\n--{boundary}\r\n{type_line}Content-range: bytes {first}-{last}/{size}\r\n\r\n".encode(
                "latin-1"
            )
            for first, last in ranges
        ]
        trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
        length = sum(len(p) for p in parts) + sum(b - a + 1 for a, b in ranges) + len(trailer)
        headers.append(("Content-Length", str(length)))
        headers.append(("Content-Type", f"multipart/byteranges; boundary={boundary}"))
        exchange.start("206 Partial Content", headers)
        for part, (first, last) in zip(parts, ranges, strict=True):
            exchange.write(part)
            exchange.sendfile(fd, first, last - first + 1)
        exchange.write(trailer)

    # -- directories ----------------------------------------------------------------------------

    def _directory(
        self, exchange: Exchange, root: str, fs_path: str, url_path: str, settings: DirSettings
    ) -> None:
        if not url_path.endswith("/"):
            # mod_dir: the slash form, keeping the query string.
            target = quote(url_path.encode("latin-1"), safe="/;:@&=+$,!~*'()") + "/"
            query = exchange.request.query
            url = location_url(exchange, target + ("?" + query if query else ""))
            body = f'The document has moved <a href="{html.escape(url)}">here</a>.'
            exchange.send_error(301, body, [("Location", url)])
            return
        settings = self.rules.settings_for(fs_path.rstrip("/") or "/")
        method = exchange.request.method
        for name in settings.directory_index:
            if "/" in name:
                continue  # URL-style index entries are not supported
            index_path = fs_path + name
            try:
                st = os.stat(index_path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            fd = self._open(exchange, root, index_path, settings)
            if fd is None:
                return
            try:
                self.send_file(exchange, fd, os.fstat(fd), index_path)
            finally:
                os.close(fd)
            return
        if "Indexes" in settings.options and method in ("GET", "HEAD"):
            self._listing(exchange, fs_path, url_path)
        elif method == "POST":
            exchange.send_error(404, NOT_FOUND_TEXT)
        else:
            self._error(
                exchange,
                403,
                f"Cannot serve directory {fs_path}: No matching DirectoryIndex "
                f"({','.join(settings.directory_index) or 'none'}) found, and server-generated "
                "directory index forbidden by Options directive",
                "AH01276",
            )

    def _listing(self, exchange: Exchange, fs_path: str, url_path: str) -> None:
        """A plain HTML index like mod_autoindex without FancyIndexing; names escaped."""
        try:
            entries = sorted(os.scandir(fs_path), key=lambda e: e.name)
        except OSError:
            self._error(exchange, 403, f"Can't open directory for index: {fs_path}", "AH01275")
            return
        display = _fs_name(url_path)
        title = html.escape(display.rstrip("/") or "/")
        lines = [
            '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" '
            '"http://www.w3.org/TR/html4/strict.dtd">',
            "<html>",
            " <head>",
            f"  <title>Index of {title}</title>",
            " </head>",
            " <body>",
            f"<h1>Index of {title}</h1>",
        ]
        items = []
        if display != "/":
            parent = display.rstrip("/").rpartition("/")[0] + "/"
            items.append(f'<li><a href="{html.escape(quote(parent))}"> Parent Directory</a></li>')
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            suffix = "/" if is_dir else ""
            href = quote(os.fsencode(entry.name)) + suffix
            text = html.escape(
                entry.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            )
            items.append(f'<li><a href="{html.escape(href)}"> {text}{suffix}</a></li>')
        lines.append("<ul>" + "\n".join(items) + "\n</ul>")
        lines.append("</body></html>\n")
        body = "\n".join(lines).encode("utf-8")
        exchange.respond("200 OK", [("Content-Type", "text/html;charset=UTF-8")], body)
