"""Run the real mpmd (`python tests/proxy_front.py -f CONF [mpmd flags]`) as a reverse proxy
before the ProxyPass directives exist: the routes come from MPMD_TEST_PROXY (JSON) and each
route's runtime is tests/proxy_doubles.RoundRobin, patched in here, in the server's own
process, so its children inherit it. Everything else is the real server: parent, MPM,
protocol engine, router, access and error logs.

MPMD_TEST_PROXY = {"routes": [[prefix, [port, ...]], ...], "proxy": {ProxySettings fields},
                   "member": {WorkerParams fields of every member}}
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mpmd import cli
from mpmd.config.model import ProxyRoute, ProxySettings, ServerConfig
from mpmd.handlers.proxy.handler import ProxyHandler
from mpmd.handlers.router import Router
from mpmd.mpm import context
from proxy_doubles import RoundRobin, member


def _settings() -> ProxySettings:
    spec = json.loads(os.environ["MPMD_TEST_PROXY"])
    routes = []
    for prefix, ports in spec["routes"]:
        if len(ports) == 1:
            backend = member(ports[0], **spec.get("member", {}))
            routes.append(ProxyRoute(prefix, False, backend.url, backend, "test:1"))
        else:
            target = "balancer://test" + ("/" if prefix.endswith("/") else "")
            routes.append(ProxyRoute(prefix, False, target, None, "test:1"))
    return ProxySettings(routes=tuple(routes), **spec.get("proxy", {}))


def _ports(route: ProxyRoute) -> list[int]:
    spec = json.loads(os.environ["MPMD_TEST_PROXY"])
    for prefix, ports in spec["routes"]:
        if prefix == route.path:
            return ports
    raise KeyError(route.path)


def _with_proxy(config: ServerConfig) -> ServerConfig:
    settings = _settings()
    main = dataclasses.replace(config.main, proxy=settings)
    vhosts = tuple(dataclasses.replace(v, proxy=settings) for v in config.vhosts)
    return dataclasses.replace(config, main=main, vhosts=vhosts)


def _build_router(config, error_log, scoreboard=None):
    def runtime_for(route: ProxyRoute) -> RoundRobin:
        params = json.loads(os.environ["MPMD_TEST_PROXY"]).get("member", {})
        return RoundRobin([member(port, **params) for port in _ports(route)])

    handlers = context.scoreboard_handlers(config, scoreboard)
    proxy = ProxyHandler(config, error_log, runtime_for)
    return Router(config, error_log, extra_handlers=handlers, proxy=proxy)


_load = cli._Options.load


def _load_with_proxy(self, *args, **kwargs):
    return _with_proxy(_load(self, *args, **kwargs))


cli._Options.load = _load_with_proxy  # type: ignore[method-assign]
context.build_router = _build_router

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
