"""The parsed tree's mod_proxy directives → ProxySettings per host, Balancers, ProxyHCExpr.

config/build.py checks every directive's context and arity and then calls build_proxy once
with the whole tree. This module reads the proxy directives again in file order, because
their meaning depends on where they are written and on what came before, as in Apache: the
path-less ProxyPass of a <Location>, the balancer of a <Proxy balancer://x>, ProxySet (which
needs its balancer or worker defined earlier), hcexpr= and hctemplate= (which need their
ProxyHCExpr / ProxyHCTemplate earlier), and workers shared by URL (a second ProxyPass to the
same URL reuses the first worker and ignores its own parameters: AH01146).

Merging follows mod_proxy.c: a virtual host's ProxyPass list is the main server's followed by
its own (merge_proxy_config appends), but a path-less ProxyPass of a matching <Location> is
tried before all of them, the last matching section first (proxy_trans checks the per-dir
alias first; later sections override earlier ones). Balancers, workers, ProxyHCExpr and
ProxyHCTemplate names are server-wide.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mpmd.config import directives as reg
from mpmd.config import proxy_params as params
from mpmd.config.model import (
    BackendMember,
    Balancer,
    BalancerParams,
    ProxyRoute,
    ProxySettings,
    ReverseRule,
    WorkerParams,
)
from mpmd.config.syntax import ConfigError, Node
from mpmd.config.validators import DirectiveValueError

_CONDITIONALS = {"ifmodule", "ifdefine", "ifversion", "iffile", "ifdirective", "ifsection"}
_LOCAL_SETTINGS = {"proxypreservehost", "proxyaddheaders", "proxyerroroverride"}
_PASS_FLAGS = ("nocanon", "interpolate", "noquery")


@dataclass(frozen=True, slots=True)
class ProxyBuild:
    """What build_proxy found: config/build.py puts it into the VirtualHosts and ServerConfig."""

    main: ProxySettings
    vhosts: tuple[ProxySettings, ...]
    balancers: tuple[Balancer, ...]
    hc_expressions: tuple[tuple[str, str], ...]
    status: bool
    warnings: tuple[str, ...]


@dataclass
class _Worker:
    url: params.BackendUrl
    fields: dict[str, Any]
    source: str


@dataclass
class _BalancerDraft:
    name: str
    source: str
    defined: bool = False  # by <Proxy>, BalancerMember or ProxySet, not only named by ProxyPass
    fields: dict[str, Any] = field(default_factory=dict)
    members: list[_Worker] = field(default_factory=list)


@dataclass
class _Route:
    path: str
    regex: bool
    target: str | None
    balancer: str | None
    worker: _Worker | None
    node: Node


@dataclass
class _Server:
    routes: list[_Route] = field(default_factory=list)
    location_routes: list[_Route] = field(default_factory=list)
    reverse: list[ReverseRule] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Section:
    """The <Location> or <Directory> (or their Match forms) a directive is written in."""

    kind: str  # "location" or "directory"
    label: str  # as Apache spells the section: "Location", "LocationMatch" ...
    path: str
    regex: bool


def _fail(node: Node, message: str) -> ConfigError:
    return ConfigError(node.file, node.line, message)


def _is_balancer(text: str) -> bool:
    return text[:11].lower() == "balancer://"


def _split_param(word: str) -> tuple[str, str] | None:
    key, sep, val = word.partition("=")
    return (key, val) if sep else None


class _ProxyBuilder:
    def __init__(self) -> None:
        self.main = _Server()
        self.vhosts: list[_Server] = []
        self.balancers: dict[str, _BalancerDraft] = {}
        self.workers: dict[str, _Worker] = {}
        self.expressions: dict[str, tuple[str, str]] = {}
        self.templates: dict[str, dict[str, Any]] = {}
        self.status = False
        self.built: dict[int, BackendMember] = {}
        self.warnings: list[str] = []
        self._warned: set[str] = set()

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(message)

    # -- walking ----------------------------------------------------------------------------

    def walk(self, nodes: Sequence[Node], server: _Server, section: _Section | None) -> None:
        for node in nodes:
            key = node.name.lower()
            if node.children is None:
                self.directive(node, server, section)
            elif key in _CONDITIONALS:
                self.walk(node.children, server, section)
            elif key == "virtualhost":
                vhost = _Server()
                self.vhosts.append(vhost)
                self.walk(node.children, vhost, None)
            elif key in ("location", "locationmatch", "directory", "directorymatch"):
                args = node.args
                regex = key.endswith("match") or args[0] == "~"
                path = args[-1]
                kind = "location" if key.startswith("location") else "directory"
                label = kind.capitalize() + ("Match" if key.endswith("match") else "")
                self.walk(node.children, server, _Section(kind, label, path, regex))
            elif key in ("proxy", "proxymatch"):
                self.proxy_section(node, key == "proxymatch")

    def directive(self, node: Node, server: _Server, section: _Section | None) -> None:
        key = node.name.lower()
        passes = ("proxypass", "proxypassmatch", "proxypassreverse")
        if key in passes and section is not None and section.kind == "directory":
            raise _fail(node, f"{node.name} cannot occur within <Directory> section")
        try:
            if key in ("proxypass", "proxypassmatch"):
                self.proxy_pass(node, server, section, key == "proxypassmatch")
            elif key == "proxypassreverse":
                self.pass_reverse(node, server, section)
            elif key == "balancermember":
                self.member(node, None)
            elif key == "proxyset":
                self.proxy_set(node, None)
            elif key == "proxyhcexpr":
                name, expression = params.v_hc_expr(node.name, node.args)
                self.expressions[name.lower()] = (name, expression)
            elif key == "proxyhctemplate":
                self.template(node)
            elif key in _LOCAL_SETTINGS and section is not None:
                self.warn_once(f"local:{key}", f"{node.where}: MP00102: {node.name} inside "
                               f"<{section.label}> is not applied by mpmd; set it for the "
                               "server or the virtual host")  # fmt: skip
            elif key in _LOCAL_SETTINGS or key in ("proxytimeout", "proxyvia", "proxystatus"):
                self.setting(node, server)
        except DirectiveValueError as err:
            raise _fail(node, str(err)) from None

    def setting(self, node: Node, server: _Server) -> None:
        d = reg.lookup(node.name)
        assert d is not None
        value = d.validate(d.name, node.args)
        if d.name == "ProxyStatus":
            self.status = self.status or value
        elif d.name == "ProxyErrorOverride":
            server.settings["error_override"] = value[0]
            server.settings["error_override_codes"] = value[1]
        else:
            server.settings[_SETTING_FIELDS[d.name]] = value

    # -- ProxyPass, ProxyPassMatch, ProxyPassReverse ---------------------------------------

    def proxy_pass(self, node: Node, server: _Server, section: _Section | None,
                   match: bool) -> None:  # fmt: skip
        path = section.path if section is not None else None
        regex = match or (section is not None and (section.regex or _is_glob(section.path)))
        target: str | None = None
        pairs: dict[str, str] = {}
        for word in node.args:
            if path is None:
                if word == "~":
                    if match:
                        raise DirectiveValueError("ProxyPassMatch invalid syntax ('~' usage).")
                    regex = True
                    continue
                path = word
            elif target is None:
                target = word
            elif word.lower() in _PASS_FLAGS:
                self.unused(node, f"the {word.lower()} flag")
            else:
                pair = _split_param(word)
                if pair is None:
                    if section is not None and target.startswith("/"):
                        raise DirectiveValueError("ProxyPass|ProxyPassMatch can not have a path "
                                                  "when defined in a location.")  # fmt: skip
                    raise DirectiveValueError("Invalid ProxyPass|ProxyPassMatch parameter. "
                                              "Parameter must be in the form 'key=value'.")  # fmt: skip
                if pair[0].lower() == "mapping":
                    if pair[1].lower() not in ("encoded", "servlet"):
                        raise DirectiveValueError("unknown mapping")
                    self.unused(node, f"mapping={pair[1]}")
                else:
                    pairs[pair[0]] = pair[1]
        if path is None or target is None:
            raise DirectiveValueError(
                "ProxyPass|ProxyPassMatch needs a path when not defined in a location"
            )
        if regex:
            try:
                re.compile(path)
            except re.error:
                raise DirectiveValueError("Regular expression could not be compiled.") from None
        route = _Route(path, regex, None, None, None, node)
        if target == "!":
            pass
        elif _is_balancer(target):
            route.balancer = self.balancer_named(target, node, prefix="ProxyPass ")
            route.target = route.balancer + target[len(route.balancer) :]
            draft = self.balancers[route.balancer]
            for key, val in pairs.items():
                self.prefixed("ProxyPass ", params.balancer_param, draft.fields, key, val)
        else:
            route.target = target
            route.worker = self.pass_worker(node, target, regex, pairs)
        (server.location_routes if section is not None else server.routes).append(route)

    def pass_worker(self, node: Node, target: str, regex: bool,
                    pairs: dict[str, str]) -> _Worker:  # fmt: skip
        url = self.prefixed("ProxyPass ", params.parse_url, target, regex=regex)
        shared = None if regex else self.workers.get(url.name)
        if shared is not None:
            for key, val in pairs.items():
                self.warnings.append(f"{node.where}: AH01146: Ignoring parameter '{key}={val}' "
                                     f"for worker '{url.name}' because of worker sharing")  # fmt: skip
            return shared
        worker = _Worker(url, self.worker_fields(node, "ProxyPass ", pairs), node.where)
        if not regex:
            self.workers[url.name] = worker
        return worker

    def pass_reverse(self, node: Node, server: _Server, section: _Section | None) -> None:
        args = node.args
        if section is None:
            if len(args) < 2 or args[1].lower() == "interpolate":
                raise DirectiveValueError(
                    "ProxyPassReverse needs a path when not defined in a location"
                )
            path, url, interpolate = args[0], args[1], args[2:]
        else:
            if len(args) > 1 and args[1].lower() != "interpolate":
                raise DirectiveValueError(
                    "ProxyPassReverse can not have a path when defined in a location"
                )
            path, url, interpolate = section.path, args[0], args[1:]
        if interpolate:
            self.unused(node, "interpolate")
        if _is_balancer(url):
            name = params.balancer_name(url)
            url = name + url[len(name) :]
        server.reverse.append(ReverseRule(path, url))

    # -- balancers, members, ProxySet, <Proxy> ----------------------------------------------

    def balancer_named(self, text: str, node: Node, *, prefix: str) -> str:
        name = self.prefixed(prefix, params.balancer_name, text)
        self.balancers.setdefault(name, _BalancerDraft(name, node.where))
        return name

    def define(self, name: str, node: Node) -> _BalancerDraft:
        draft = self.balancers[name]
        if not draft.defined:
            draft.defined, draft.source = True, node.where
        return draft

    def member(self, node: Node, section_path: str | None) -> None:
        path, url_text = section_path, None
        pairs: dict[str, str] = {}
        for word in node.args:
            pair = _split_param(word)
            if pair is not None:
                pairs[pair[0]] = pair[1]
            elif path is None:
                path = word
            elif url_text is None:
                url_text = word
            elif section_path is not None:
                raise DirectiveValueError("BalancerMember can not have a balancer name when "
                                          "defined in a location")  # fmt: skip
            else:
                raise DirectiveValueError("Invalid BalancerMember parameter. Parameter must "
                                          "be in the form 'key=value'")  # fmt: skip
        if path is None:
            raise DirectiveValueError(
                "BalancerMember must define balancer name when outside <Proxy > section"
            )
        if url_text is None:
            raise DirectiveValueError("BalancerMember must define remote proxy server")
        if not _is_balancer(path):
            raise DirectiveValueError(
                f"BalancerMember {path}: a balancer's name starts with balancer://"
            )
        draft = self.define(self.balancer_named(path, node, prefix="BalancerMember "), node)
        url = self.prefixed("BalancerMember ", params.parse_url, url_text)
        if any(m.url == url for m in draft.members):
            self.warnings.append(f"{node.where}: AH01149: Sharing worker '{url.name}' instead "
                                 f"of creating new worker '{url_text}'")  # fmt: skip
            for key, val in pairs.items():
                self.warnings.append(f"{node.where}: AH01150: Ignoring parameter '{key}={val}' "
                                     f"for worker '{url.name}' because of worker sharing")  # fmt: skip
            return
        fields = self.worker_fields(node, "BalancerMember ", pairs)
        draft.members.append(_Worker(url, fields, node.where))

    def proxy_set(self, node: Node, section_path: str | None) -> None:
        words = list(node.args)
        name = section_path if section_path is not None else words.pop(0)
        pairs = []
        for word in words:
            pair = _split_param(word)
            if pair is None:
                raise DirectiveValueError(
                    "Invalid ProxySet parameter. Parameter must be in the form 'key=value'"
                )
            pairs.append(pair)
        self.set_params(node, name, pairs, section_path is not None, "ProxySet")

    def set_params(self, node: Node, name: str, pairs: list[tuple[str, str]], in_section: bool,
                   label: str) -> None:  # fmt: skip
        """ProxySet, or a <Proxy URL key=value> head: a balancer's or a worker's parameters."""
        prefix = "<Proxy " if label.startswith("<") else "ProxySet "
        if _is_balancer(name):
            bname = self.prefixed(prefix, params.balancer_name, name)
            if bname not in self.balancers and not in_section:
                raise DirectiveValueError(f"ProxySet can not find '{name}' Balancer.")
            self.balancers.setdefault(bname, _BalancerDraft(bname, node.where))
            draft = self.define(bname, node)
            target, apply = draft.fields, params.balancer_param
        else:
            url = self.prefixed(prefix, params.parse_url, name)
            worker = self.workers.get(url.name)
            if worker is None:
                if not in_section:
                    raise DirectiveValueError(f"ProxySet can not find '{name}' Worker.")
                worker = self.workers[url.name] = _Worker(url, {}, node.where)
            target, apply = worker.fields, self.worker_param
        for key, val in pairs:
            try:
                apply(target, key, val)
            except DirectiveValueError as err:
                sep = ": " if label == "ProxySet" else " "
                raise DirectiveValueError(f"{label}{sep}{err} {key}={val}; {name}") from None

    def proxy_section(self, node: Node, match: bool) -> None:
        label = "ProxyMatch" if match else "Proxy"
        path = node.args[0]
        if path[:6].lower() == "proxy:":
            path = path[6:]
        if match:
            try:
                re.compile(path)
            except re.error:
                raise _fail(node, "Regex could not be compiled") from None
        extra = node.args[1:]
        if extra:
            if match:
                raise _fail(node, "Multiple <ProxyMatch> arguments not (yet) supported.")
            if _is_glob(path):
                raise _fail(node, f"<{label}> arguments are not supported for wildchar url.")
            if ":" not in path:
                raise _fail(node, f"<{label}> arguments are not supported for non url.")
            pairs = []
            for word in extra:
                pair = _split_param(word)
                if pair is None:
                    raise _fail(node, "Invalid Proxy parameter. Parameter must be in the form "
                                "'key=value'")  # fmt: skip
                pairs.append(pair)
            try:
                self.set_params(node, path, pairs, True, f"<{label}")
            except DirectiveValueError as err:
                raise _fail(node, str(err)) from None
        elif _is_balancer(path) and not match:
            try:
                self.define(self.balancer_named(path, node, prefix=f"<{label}> "), node)
            except DirectiveValueError as err:
                raise _fail(node, str(err)) from None
        for child in node.children or ():
            key = child.name.lower()
            try:
                if key == "balancermember":
                    self.member(child, path)
                elif key == "proxyset":
                    self.proxy_set(child, path)
                elif [key, *(a.lower() for a in child.args)] != ["require", "all", "granted"]:
                    self.warn_once(f"in-proxy:{key}", f"{child.where}: MP00101: {child.name} "
                                   f"inside <{label}> is not applied by mpmd (only "
                                   "BalancerMember and ProxySet are); use <Location>")  # fmt: skip
            except DirectiveValueError as err:
                raise _fail(child, str(err)) from None

    # -- parameters -------------------------------------------------------------------------

    def worker_param(self, fields: dict[str, Any], key: str, val: str) -> None:
        params.worker_param(fields, key, val, self.templates, self.expressions)

    def worker_fields(self, node: Node, prefix: str, pairs: dict[str, str]) -> dict[str, Any]:
        """A worker's own keys over its hctemplate's values (the member's keys win)."""
        fields: dict[str, Any] = {}
        ordered = sorted(pairs.items(), key=lambda kv: kv[0].lower() != "hctemplate")
        for key, val in ordered:
            self.prefixed(prefix, self.worker_param, fields, key, val)
            if key.lower() in params.UNUSED_WORKER_KEYS:
                self.unused(node, f"the worker parameter {key.lower()}")
        return fields

    def template(self, node: Node) -> None:
        words = list(node.args)
        name = words.pop(0) if words else ""
        if not name:
            raise DirectiveValueError("Missing template name for ProxyHCTemplate")
        fields = params.template_fields()
        for word in words:
            pair = _split_param(word)
            if pair is None:
                raise DirectiveValueError("Invalid ProxyHCTemplate parameter. Parameter must "
                                          "be in the form 'key=value'")  # fmt: skip
            try:
                params.hc_param(fields, pair[0], pair[1], self.templates, self.expressions)
            except DirectiveValueError as err:
                raise DirectiveValueError(
                    f"ProxyHCTemplate: {err} {pair[0]}={pair[1]}; {name}"
                ) from None
        self.templates[name.lower()] = fields

    @staticmethod
    def prefixed(prefix: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one check; its error gets the directive's name in front, as Apache's."""
        try:
            return function(*args, **kwargs)
        except DirectiveValueError as err:
            raise DirectiveValueError(f"{prefix}{err}") from None

    def unused(self, node: Node, what: str) -> None:
        self.warn_once(f"unused:{what}", f"{node.where}: MP00103: {node.name}: {what} is "
                       "accepted but not implemented by mpmd; ignored")  # fmt: skip

    # -- the model --------------------------------------------------------------------------

    def settings(self, server: _Server, base: ProxySettings | None,
                 routes: list[ProxyRoute], reverse: tuple[ReverseRule, ...]) -> ProxySettings:  # fmt: skip
        inherited = base if base is not None else ProxySettings()
        values = {name: getattr(inherited, name) for name in _INHERITED}
        values.update(server.settings)
        return ProxySettings(routes=tuple(routes), reverse=reverse, **values)

    def route(self, route: _Route) -> ProxyRoute:
        if route.balancer is not None and not self.balancers[route.balancer].defined:
            raise _fail(route.node, f"ProxyPass can not find '{route.balancer}' Balancer. (no "
                        "<Proxy> section or BalancerMember defines it)")  # fmt: skip
        member = self.backend(route.worker) if route.worker is not None else None
        return ProxyRoute(route.path, route.regex, route.target, member, route.node.where)

    def backend(self, worker: _Worker) -> BackendMember:
        """One BackendMember per worker: routes sharing a worker share the object."""
        if id(worker) in self.built:
            return self.built[id(worker)]
        fields = dict(worker.fields)
        if worker.url.scheme == "ws":
            fields.setdefault("upgrade", "websocket")
        member = self.built[id(worker)] = BackendMember(
            url=worker.url.name,
            scheme=worker.url.scheme,  # type: ignore[arg-type]
            host=worker.url.host,
            port=worker.url.port,
            path=worker.url.path,
            params=WorkerParams(**fields),
            source=worker.source,
        )
        return member

    def result(self) -> ProxyBuild:
        main = self.main
        main_locations = list(reversed(main.location_routes))
        main_settings = self.settings(
            main,
            None,
            [self.route(r) for r in main_locations + main.routes],
            tuple(main.reverse),
        )
        vhosts = []
        for vhost in self.vhosts:
            order = list(reversed(vhost.location_routes)) + main_locations
            order += main.routes + vhost.routes
            reverse = tuple(main.reverse + vhost.reverse)
            vhosts.append(self.settings(vhost, main_settings, [self.route(r) for r in order],
                                        reverse))  # fmt: skip
        balancers = tuple(
            Balancer(
                name=draft.name,
                members=tuple(self.backend(m) for m in draft.members),
                params=BalancerParams(**draft.fields),
                source=draft.source,
            )
            for draft in self.balancers.values()
            if draft.defined
        )
        return ProxyBuild(
            main=main_settings,
            vhosts=tuple(vhosts),
            balancers=balancers,
            hc_expressions=tuple(self.expressions.values()),
            status=self.status,
            warnings=tuple(self.warnings),
        )


_SETTING_FIELDS = {
    "ProxyPreserveHost": "preserve_host",
    "ProxyTimeout": "timeout",
    "ProxyAddHeaders": "add_headers",
    "ProxyVia": "via",
}
_INHERITED = ("preserve_host", "timeout", "add_headers", "via", "error_override",
              "error_override_codes")  # fmt: skip


def _is_glob(path: str) -> bool:
    """apr_fnmatch_test: a path with wildcards is matched as a pattern."""
    return any(c in path for c in "*?[")


def build_proxy(nodes: Sequence[Node]) -> ProxyBuild:
    """Read the tree's proxy directives (already context-checked by build.py). ConfigError."""
    builder = _ProxyBuilder()
    builder.walk(nodes, builder.main, None)
    return builder.result()
