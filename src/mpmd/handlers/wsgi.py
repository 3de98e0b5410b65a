"""The PEP 3333 adapter: one WSGI application behind one mount, run for each request.

It owns the environ (a constant part built once per mount, completed with the connection's
values once per connection, copied and completed per request), start_response with the
exc_info rules, the write() callable, wsgi.file_wrapper with sendfile, and the promise that the
iterable's close() is called whatever happens. It never touches a
socket (it writes through the Exchange) and never lets an application's exception or traceback
reach the client: before the head it becomes a 500, after it the connection is closed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import VirtualHost, WsgiMount
from mpmd.http.errors import HttpError
from mpmd.http.exchange import Exchange
from mpmd.http.fields import host_name

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WsgiLoadError(RuntimeError):
    """The script or module named by a mount cannot give a WSGI callable."""


class FileWrapper:
    """wsgi.file_wrapper: iterates blocks, and lets the handler sendfile() a real file."""

    __slots__ = ("blksize", "filelike")

    def __init__(self, filelike: Any, blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> FileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def sendfile_span(self) -> tuple[int, int, int] | None:
        """(fd, offset, count) when the wrapped object is a regular file on disk, else None."""
        try:
            fd = self.filelike.fileno()
            offset = self.filelike.tell()
            st = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return fd, offset, max(0, st.st_size - offset)


# -- loading ------------------------------------------------------------------------------------


def extend_sys_path(python_path: Sequence[str]) -> None:
    for entry in python_path:
        if entry not in sys.path:
            sys.path.insert(0, entry)


def _load_script(path: str) -> Any:
    """Exec a WSGIScriptAlias file as a module named after its path, as mod_wsgi does."""
    name = "_mpmd_wsgi_" + hashlib.md5(path.encode(), usedforsecurity=False).hexdigest()
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    if spec is None:
        raise WsgiLoadError(f"Target WSGI script '{path}' cannot be loaded as Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    app = getattr(module, "application", None)
    if app is None:
        raise WsgiLoadError(
            f"Target WSGI script '{path}' does not contain WSGI application 'application'."
        )
    return app


def load_module_app(target: str) -> Any:
    """`module:callable`, `module:obj.attr`, `module:factory()`; bare `module` means `application`."""
    module_name, _, expr = target.partition(":")
    expr = expr or "application"
    call = expr.endswith("()")
    if call:
        expr = expr[:-2]
    obj: Any = importlib.import_module(module_name)
    for attr in expr.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise WsgiLoadError(f"application '{target}': no attribute {attr!r}") from None
    if call:
        obj = obj()
    if not callable(obj):
        raise WsgiLoadError(f"application '{target}' is not callable")
    return obj


def load_wsgi_app(mount: WsgiMount, python_path: Sequence[str]) -> WsgiApp:
    """Load the application a WSGIScriptAlias or WSGIApp names (runs the user's code)."""
    extend_sys_path(python_path)
    if mount.kind == "script":
        return _load_script(mount.target)
    return load_module_app(mount.target)


# -- per-request environ ------------------------------------------------------------------------


def wsgi_str(text: str) -> str:
    """A configured (UTF-8) URL path in PEP 3333's form: its bytes as latin-1 characters."""
    return text if text.isascii() else text.encode("utf-8").decode("latin-1")


_HEADER_KEYS: dict[str, str | None] = {"content-type": None, "content-length": None}


def _environ_key(name: str) -> str | None:
    """HTTP_* key of a lower-case header name; None for names with `_` (dropped, as Apache)."""
    key = _HEADER_KEYS.get(name, "")
    if key != "":
        return key
    key = None if "_" in name else "HTTP_" + name.upper().replace("-", "_")
    if len(_HEADER_KEYS) < 4096:
        _HEADER_KEYS[name] = key
    return key


_SERVER_NAMES: dict[str, str] = {}  # Host header -> SERVER_NAME: a client sends the same one


def _server_name(host: str) -> str:
    name = _SERVER_NAMES.get(host)
    if name is None:
        name = host_name(host)
        if len(_SERVER_NAMES) >= 1024:
            _SERVER_NAMES.clear()
        _SERVER_NAMES[host] = name
    return name


class _WsgiCall:
    """One request's start_response/write state (slots instead of closures)."""

    __slots__ = ("exchange", "gone", "headers", "started", "status")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.started = False  # exchange.start() called with the app's status
        self.gone: OSError | None = None  # the send failed: the client went away

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None):
        if exc_info is not None:
            try:
                if self.exchange.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called twice without exc_info")
        self.status = status
        self.headers = headers
        self.started = False
        return self.write

    def write(self, data: bytes) -> None:
        if not self.started:
            self.begin()
        try:
            self.exchange.write(data)
        except OSError as exc:
            self.gone = exc
            raise

    def respond(self, body: bytes) -> None:
        try:
            self.exchange.respond(self.status, self.headers, body)  # type: ignore[arg-type]
        except OSError as exc:
            self.gone = exc
            raise

    def sendfile(self, fd: int, offset: int, count: int) -> None:
        if not self.started:
            self.begin()
        try:
            self.exchange.sendfile(fd, offset, count)
        except OSError as exc:
            self.gone = exc
            raise

    def begin(self) -> None:
        if self.status is None:
            raise AssertionError("the application sent body data before start_response()")
        self.exchange.start(self.status, self.headers)
        self.started = True


def tls_environ(info, vhost: VirtualHost) -> dict[str, str]:
    """wsgi.url_scheme https, HTTPS=on and the SSL_* variables of the request's host."""
    from mpmd.http.tls import ssl_environ

    ssl = vhost.ssl or (info.host.settings if info.host is not None else None)
    return {"wsgi.url_scheme": "https", **ssl_environ(info, ssl.options if ssl else frozenset())}


class WsgiHandler:
    """A handler (Callable[[Exchange], None]) running one WSGI app under one mount."""

    __slots__ = ("_base", "_log_target", "app", "error_log", "mount")

    def __init__(
        self,
        app: WsgiApp,
        mount: WsgiMount,
        *,
        error_log: Any,
        multithread: bool = False,
        multiprocess: bool = True,
        vhost: VirtualHost | None = None,
        url_scheme: str = "http",
    ) -> None:
        self.app = app
        self.mount = mount
        self.error_log = error_log
        self._log_target = mount.target
        # Constant for every request through this mount: copied, never rebuilt.
        self._base: dict[str, Any] = {
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SCRIPT_NAME": wsgi_str(mount.url_path.rstrip("/")),
            "SERVER_NAME": vhost.server_name if vhost is not None else "localhost",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": url_scheme,
            "wsgi.errors": getattr(error_log, "stream", sys.stderr),
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            # wsgi.input ends where the body ends (sized or chunked): Werkzeug reads a chunked
            # body only when told so, as gunicorn and mod_wsgi do.
            "wsgi.input_terminated": True,
        }
        if mount.kind == "script":
            self._base["SCRIPT_FILENAME"] = mount.target

    def environ(
        self, exchange: Exchange, path_info: str | None = None, script_name: str | None = None
    ) -> dict[str, Any]:
        """The request's environ. `path_info` is the decoded path below the mount."""
        request = exchange.request
        conn = exchange.conn
        cached = conn.wsgi_base
        if cached is not None and cached[0] is self:
            env = cached[1].copy()
        else:
            base = {
                **self._base,
                "SERVER_PORT": str(conn.server_port),
                "SERVER_ADDR": conn.server_addr,
                "REMOTE_PORT": str(conn.client_port),
                "wsgi.multithread": conn.multithread,
                "wsgi.multiprocess": conn.multiprocess,
            }
            if conn.tls is not None:  # HTTPS, and SSL_* as the host's SSLOptions ask
                base.update(tls_environ(conn.tls, exchange.vhost))
            if not conn.client_port:  # a Unix socket's client: no port, as gunicorn
                del base["REMOTE_PORT"]
            conn.wsgi_base = (self, base)
            env = base.copy()
        if path_info is None:
            path_info = request.path[len(self._base["SCRIPT_NAME"]) :]
        env["REMOTE_ADDR"] = conn.client_addr  # per request: mod_remoteip may rewrite it
        env["REQUEST_METHOD"] = request.method
        env["PATH_INFO"] = path_info
        env["QUERY_STRING"] = request.query
        env["REQUEST_URI"] = request.target
        env["SERVER_PROTOCOL"] = request.version
        env["wsgi.input"] = request.body
        if script_name is not None:
            env["SCRIPT_NAME"] = script_name
        if request.content_length is not None:
            env["CONTENT_LENGTH"] = str(request.content_length)
        keys = _HEADER_KEYS
        for name, value in request.headers:
            key = keys.get(name, "")
            if key == "":
                key = _environ_key(name)
            if key is None:
                if name == "content-type":
                    env["CONTENT_TYPE"] = value
                continue
            if key in env:
                env[key] = env[key] + ", " + value
            else:
                env[key] = value
        host = env.get("HTTP_HOST")
        if host:  # UseCanonicalName Off: the name the client asked for
            env["SERVER_NAME"] = _server_name(host)
        return env

    def __call__(self, exchange: Exchange, path_info: str | None = None) -> None:
        self.run(exchange, self.environ(exchange, path_info))

    def run(self, exchange: Exchange, environ: dict[str, Any]) -> None:
        """Call the app with `environ` and send what it returns (PEP 3333 section by section)."""
        call = _WsgiCall(exchange)
        try:
            result = self.app(environ, call.start_response)
        except HttpError as exc:
            self._input_error(exchange, exc)
            return
        except Exception:
            self._failed(exchange, call)
            return
        try:
            if (
                type(result) is list
                and len(result) == 1
                and call.status is not None
                and not call.started
                and not exchange.head_sent
            ):
                call.respond(result[0])  # the hello-world shape: one send, Content-Length
                return
            if type(result) is FileWrapper and call.status is not None:
                span = result.sendfile_span()
                if span is not None:
                    call.sendfile(*span)
                    return
            write = call.write
            for data in result:
                if data:
                    write(data)
            if not call.started:
                call.begin()  # an empty body: the head goes out with Content-Length: 0
        except HttpError as exc:
            self._input_error(exchange, exc)
        except Exception:
            self._failed(exchange, call)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    self._app_error(exchange)

    # -- failures -------------------------------------------------------------------------------

    def _client(self, exchange: Exchange) -> str:
        return f"{exchange.conn.client_addr}:{exchange.conn.client_port}"

    def _failed(self, exchange: Exchange, call: _WsgiCall) -> None:
        """An exception left the app or its iterable: the client's fault, or the app's."""
        if call.gone is not None:
            self._client_gone(exchange, call.gone)
        else:
            self._app_error(exchange)

    def _app_error(self, exchange: Exchange) -> None:
        exchange.keep_alive = False
        self.error_log.exception(
            f"Exception occurred processing WSGI script '{self._log_target}'.",
            client=self._client(exchange),
        )
        if not exchange.head_sent:
            exchange.send_error(500)
            exchange.keep_alive = False
        else:
            exchange.aborted = True  # the body is cut short: no last chunk, then close

    def _input_error(self, exchange: Exchange, exc: HttpError) -> None:
        exchange.keep_alive = False
        self.error_log.log("error", exc.log_message, module="wsgi", client=self._client(exchange))
        if not exchange.head_sent:
            exchange.send_error(exc.status)
            exchange.keep_alive = False

    def _client_gone(self, exchange: Exchange, exc: OSError) -> None:
        exchange.keep_alive = False
        exchange.aborted = True
        self.error_log.log(
            "info",
            f"({exc.errno}){exc.strerror or exc}: client went away while sending the response",
            module="wsgi",
            client=self._client(exchange),
        )


def load_failed_handler(target: str, error_log: Any) -> Callable[[Exchange], None]:
    """The handler for a mount whose app failed to load: 500, logged, as mod_wsgi does."""

    def failed(exchange: Exchange) -> None:
        exchange.keep_alive = False
        error_log.log(
            "error",
            f"Target WSGI script '{target}' cannot be loaded as Python module.",
            module="wsgi",
            client=f"{exchange.conn.client_addr}:{exchange.conn.client_port}",
        )
        exchange.send_error(500)
        exchange.keep_alive = False

    return failed
