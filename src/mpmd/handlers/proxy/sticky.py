"""Sticky sessions (reference 7.5 step 2): the route in the request, and its worker.

mod_proxy_balancer's get_path_param, get_cookie_param, find_session_route and
find_route_worker, as pure functions: the URL and Cookie header in, a route and a worker-like
object (with `route`, `redirect`, `status`, `error_time`, `retry`, `retries`) out. An unusable
worker for the route gets a retry; if it stays unusable its `redirect` route is followed,
recursively, at most as many times as the balancer has members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mpmd.handlers.proxy.lbmethods import retry_worker
from mpmd.handlers.proxy.state import STANDBY, is_usable

_SPACE = " \t\n\v\f\r"  # C's isspace()


def path_param(url: str, name: str, scolonpathdelim: bool) -> str | None:
    """`name=value` anywhere in the URL; the value ends at `?` or `&` (and `;` with
    scolonpathdelim). As apr_strtok, leading delimiters are skipped (`name=&x` gives `x`)."""
    delims = ";?&" if scolonpathdelim else "?&"
    at = url.find(name)
    while at >= 0:
        after = at + len(name)
        if url[after : after + 1] == "=" and after + 1 < len(url):
            value = url[after + 1 :].lstrip(delims)
            end = min((i for i in (value.find(d) for d in delims) if i >= 0), default=len(value))
            return value[:end] or None
        at = url.find(name, after + 1)
    return None


def cookie_param(cookie: str | None, name: str) -> str | None:
    """The cookie `name`: it must start the header or follow `;`, `,` or whitespace; spaces
    may precede the `=`; the value ends at `;` or `,`."""
    if not cookie:
        return None
    at = cookie.find(name)
    while at >= 0:
        if at == 0 or cookie[at - 1] in ";," or cookie[at - 1] in _SPACE:
            at += len(name)
            while at < len(cookie) and cookie[at] in _SPACE:
                at += 1
            is_value = cookie[at : at + 1] == "="
            at += 1
            if is_value and at < len(cookie):
                return cookie[at:].split(";", 1)[0].split(",", 1)[0]
        at = cookie.find(name, at + 1)
    return None


def find_route_worker(
    workers: Sequence[Any], route: str, now: float, recursion: int = 1
) -> Any | None:
    """The worker whose route is `route`: non-standby members first, then the standbys."""
    for standby_pass in (False, True):
        for worker in workers:
            if bool(worker.status & STANDBY) != standby_pass:
                continue
            if not worker.route or worker.route != route:
                continue
            if is_usable(worker.status):
                return worker
            retry_worker(worker, now)
            if is_usable(worker.status):
                return worker
            if worker.redirect and recursion < len(workers):
                other = find_route_worker(workers, worker.redirect, now, recursion + 1)
                if other is not None and not is_usable(other.status):
                    retry_worker(other, now)
                if other is not None and is_usable(other.status):
                    return other
    return None


@dataclass(frozen=True, slots=True)
class SessionRoute:
    """What find_session_route found: the route ("" when the value had nothing after the
    separator; None when there was no value or no separator), the parameter or cookie name
    it came from, and the worker (None if no usable worker has the route)."""

    route: str | None
    sticky_used: str
    worker: Any | None

    @property
    def changed(self) -> bool:
        """BALANCER_ROUTE_CHANGED: the worker's route is not the one the client sent."""
        return self.worker is not None and self.worker.route != self.route


def find_session_route(
    workers: Sequence[Any],
    url: str,
    cookie: str | None,
    *,
    sticky_cookie: str,
    sticky_param: str,
    separator: str,
    scolonpathdelim: bool,
    now: float,
) -> SessionRoute | None:
    """The URL parameter first, then the cookie; the route follows the first separator
    (the whole value with stickysessionsep Off, separator ""). None when not sticky."""
    if not sticky_cookie:
        return None
    used = sticky_param
    value = path_param(url, sticky_param, scolonpathdelim) if sticky_param else None
    if value is None:
        used = sticky_cookie
        value = cookie_param(cookie, sticky_cookie)
    if value is None:
        return SessionRoute(None, "", None)
    route: str | None = value
    if separator:
        at = value.find(separator)
        route = value[at + 1 :] if at >= 0 else None
    worker = find_route_worker(workers, route, now) if route else None
    return SessionRoute(route, used, worker)
