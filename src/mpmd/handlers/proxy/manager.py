"""`SetHandler balancer-manager`: mod_proxy_balancer's page, its edit forms and its XML dump.

It owns balancer_handler's rules (reference 7.7): which parameters a GET or a POST may carry,
the same-origin `Referer` check (AH10187), the per-balancer nonce, the edits and their bounds
(balancer_process_balancer_worker), and the page's tables in Apache's layout. Edits go to the
shared ProxyState under its lock, so every child (and every thread) sees them at once; the
nonce lives in the shared state too, chosen by the parent, so a form rendered by one child is
accepted by another. Like Apache, edits are not persisted across a restart. Require is applied
by the router before this handler runs, as for server-status.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from email.utils import formatdate
from urllib.parse import quote, unquote, urlsplit

from mpmd import SERVER_SOFTWARE
from mpmd.config.model import BackendMember, ServerConfig
from mpmd.handlers.proxy.lbmethods import METHODS
from mpmd.handlers.proxy.state import (
    BalancerInfo,
    ProxySnapshot,
    ProxyState,
    WorkerInfo,
    is_usable,
)
from mpmd.handlers.proxy.status_page import sticky_text
from mpmd.handlers.status import HTML_TYPE, SERVER_BUILT, escape_html, request_host
from mpmd.handlers.status_format import strfsize
from mpmd.http.exchange import Exchange

Handler = Callable[[Exchange], None]
PREFIX = "balancer://"
GET_PARAMS = frozenset({"w", "b", "nonce", "xml"})  # a GET's query may carry only these
POST_LIMIT = 1024  # balancer_handler reads at most this much of a POST body
# (letter, label) of the worker form's status radios, in Apache's order
FLAG_RADIOS = (
    ("I", "Ignore Errors"), ("N", "Draining Mode"), ("D", "Disabled"), ("H", "Hot Standby"),
    ("R", "Hot Spare"), ("C", "HC Fail"), ("S", "Stopped"),
)  # fmt: skip
_ROUTE_SIZE = 64  # sizeof(route), sizeof(redirect)
_STICKY_SIZE = 64  # sizeof(sticky_path)
_LBPNAME_SIZE = 16
_CSS = """<style type='text/css'>
body { font-family: sans-serif; }
table {
 border-width: 1px;
 border-spacing: 3px;
 border-style: solid;
 border-color: gray;
 border-collapse: collapse;
 background-color: white;
 text-align: center;
}
th {
 border-width: 1px;
 padding: 2px 6px;
 border-style: dotted;
 border-color: gray;
 background-color: lightgray;
 text-align: center;
}
td {
 border-width: 1px;
 padding: 2px 6px;
 border-style: dotted;
 border-color: gray;
 background-color: white;
 text-align: center;
}
</style>
"""
_DOCTYPE = (
    '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">\n'
)


# -- C's number parsing, as the handler reads its fields -------------------------------------
_INT = re.compile(r"\s*([+-]?\d+)")
_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def c_atoi(text: str) -> int:
    """atoi: optional blanks and sign, then digits; anything else ends it (nothing: 0)."""
    match = _INT.match(text)
    return int(match.group(1)) if match else 0


def c_atof(text: str) -> float:
    """atof: the longest leading decimal number (nothing: 0.0)."""
    match = _FLOAT.match(text)
    return float(match.group(1)) if match else 0.0


def parse_params(text: str, allowed: frozenset[str] | None) -> dict[str, str]:
    """push2table: `&`-separated pairs; keys unescaped once, values twice (the form escapes
    worker and balancer names itself); `+` stays `+`, as ap_unescape_url leaves it."""
    params: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = unquote(key, "latin-1")
        if allowed is None or key in allowed:
            params[key] = unquote(unquote(value, "latin-1"), "latin-1")
    return params


def same_origin(referer: str | None, host: str) -> bool:
    """safe_referer: the Referer's host name equals this server's name (case-insensitive)."""
    if not referer:
        return False
    try:
        hostname = urlsplit(referer).hostname
    except ValueError:
        return False
    return bool(hostname) and hostname.lower() == host.lower()


# -- the edits ---------------------------------------------------------------------------------
def apply_edits(state: ProxyState, name: str, url: str | None, params: dict[str, str]) -> None:
    """balancer_process_balancer_worker: worker fields (when `url` names a member), then the
    balancer's; out-of-range values are ignored one by one, as Apache does. Caller checked
    the nonce."""
    with state.lock():
        bslot = state.balancer(name)
        if url is not None:
            _edit_worker(state, name, url, params)
        _edit_balancer(bslot, params)
        bslot.touch()


def _edit_worker(state: ProxyState, name: str, url: str, params: dict[str, str]) -> None:
    slot = state.worker(name, url)
    was_usable = slot.usable
    if (val := params.get("w_lf")) is not None:
        factor = int(c_atof(val) * 100.0)
        if 100 <= factor <= 10000:
            slot.lbfactor = factor
            state.recalc_factors(name)
    if (val := params.get("w_wr")) is not None:
        slot.route = val if val and _fits(val, _ROUTE_SIZE) else ""
    if (val := params.get("w_rr")) is not None:
        slot.redirect = val if val and _fits(val, _ROUTE_SIZE) else ""
    for letter, _label in FLAG_RADIOS:
        if (val := params.get(f"w_status_{letter}")) is not None:
            slot.set_flag(letter, c_atoi(val) != 0)
    if (val := params.get("w_ls")) is not None and 0 <= c_atoi(val) <= 99:
        slot.lbset = c_atoi(val)
    if not was_usable and is_usable(slot.status):  # enabling: the lbmethod starts over
        state.balancer(name).need_reset = 1


def _edit_balancer(bslot, params: dict[str, str]) -> None:
    val = params.get("b_lbm")
    if val in METHODS and _fits(val, _LBPNAME_SIZE - 1) and val != bslot.lbmethod:
        bslot.lbmethod = val
        bslot.need_reset = 1
    if (val := params.get("b_tmo")) is not None and 0 <= c_atoi(val) <= 7200:
        bslot.timeout = float(c_atoi(val))
    if (val := params.get("b_max")) is not None and 0 <= c_atoi(val) <= 99:
        bslot.max_attempts = c_atoi(val)
    if (val := params.get("b_sforce")) is not None:
        bslot.nofailover = c_atoi(val) != 0
    val = params.get("b_ss")
    if val and _fits(val, _STICKY_SIZE - 1):
        if val == "-":
            bslot.sticky_cookie = bslot.sticky_param = ""
        else:
            cookie, bar, path = val.partition("|")
            bslot.sticky_cookie = cookie
            bslot.sticky_param = path if bar else val


def _fits(value: str, size: int) -> bool:
    return len(value.encode("latin-1", "replace")) < size


# -- the page ----------------------------------------------------------------------------------
def short_name(name: str) -> str:
    return name[len(PREFIX) :] if name.startswith(PREFIX) else name


def escape_uri(text: str) -> str:
    """ap_escape_uri: percent-encode what may not stand in a URL path."""
    return quote(text, safe="/:@&=+$,;~!*'()-._")


def _radio(name: str, on: bool) -> str:
    """create_radio: an On/Off pair."""
    return (
        f"<td><label for='{name}1'>On</label> <input name='{name}' id='{name}1' value='1' "
        f"type=radio{' checked' if on else ''}> <br/> <label for='{name}0'>Off</label> "
        f"<input name='{name}' id='{name}0' value='0' type=radio{'' if on else ' checked'}></td>\n"
    )


class PageFacts:
    """What the page shows that the configuration fixes: per balancer its MaxMembers, its
    ProxyPass path and scolonpathdelim, and each member's configured parameters."""

    def __init__(self, config: ServerConfig) -> None:
        self.max_members = {b.name: len(b.members) + b.params.growth for b in config.balancers}
        self.scolon = {b.name: b.params.scolonpathdelim for b in config.balancers}
        self.members: dict[tuple[str, str], BackendMember] = {
            (b.name, m.url): m for b in config.balancers for m in b.members
        }
        self.threads_per_child = config.mpm.threads_per_child
        self.paths: dict[str, str] = {}
        main_routes = set(map(id, config.main.proxy.routes))
        for vhost in (config.main, *config.vhosts):
            for route in vhost.proxy.routes:
                if vhost is not config.main and id(route) in main_routes:
                    continue
                target = route.target or ""
                for b in config.balancers:
                    if (target == b.name or target.startswith(b.name + "/")) and (
                        b.name not in self.paths
                    ):
                        where = "" if vhost is config.main else f"{vhost.server_name} -> "
                        self.paths[b.name] = where + route.path
        self.sname_id = f"p{zlib.crc32((config.config_file or 'mpmd').encode()):x}"

    def sname(self, name: str) -> str:
        """The balancer's slotmem name as Apache shows it in brackets: pHASH_alnum-name."""
        alnum = "".join(c if c.isalnum() else "_" for c in short_name(name))
        return f"{self.sname_id}_{alnum}"


def render_page(
    snapshot: ProxySnapshot,
    facts: PageFacts,
    *,
    host: str,
    uri: str,
    bsel: BalancerInfo | None,
    wsel: WorkerInfo | None,
) -> str:
    """balancer_display_page's HTML: the header, per balancer its two tables, then the edit
    form of the selected worker, else of the selected balancer."""
    e = escape_html
    out = [
        _DOCTYPE,
        "<html><head><title>Balancer Manager</title>\n",
        _CSS,
        "</head>\n",
        f"<body><h1>Load Balancer Manager for {e(host)}</h1>\n\n",
        f"<dl><dt>Server Version: {e(SERVER_SOFTWARE)}</dt>\n",
        f"<dt>Server Built: {SERVER_BUILT}</dt>\n",
        "<dt>Balancer changes will NOT be persisted on restart.</dt>",
        "<dt>Balancers are inherited from main server.</dt>",
        "<dt>ProxyPass settings are inherited from main server.</dt>",
        "</dl>\n",
    ]
    for bal in snapshot.balancers:
        out.append(_balancer_tables(bal, facts, uri))
    out.append("<hr />\n")
    if wsel is not None and bsel is not None:
        out.append(_worker_form(bsel, wsel, uri))
    elif bsel is not None:
        out.append(_balancer_form(bsel, uri))
    out.append("</body></html>\n")
    return "".join(out)


def _balancer_tables(bal: BalancerInfo, facts: PageFacts, uri: str) -> str:
    e = escape_html
    short = short_name(bal.name)
    link = f"{escape_uri(uri)}?b={short}&amp;nonce={bal.nonce}"
    sticky = e(sticky_text(bal)) if bal.sticky_cookie else " (None) "
    out = [
        f'<hr />\n<h3>LoadBalancer Status for <a href="{link}">{e(bal.name)}</a>'
        f" [{facts.sname(bal.name)}]</h3>\n",
        "\n\n<table><tr><th>MaxMembers</th><th>StickySession</th><th>DisableFailover</th>"
        "<th>Timeout</th><th>FailoverAttempts</th><th>Method</th><th>Path</th><th>Active</th>"
        "</tr>\n<tr>",
        f"<td>{facts.max_members.get(bal.name, len(bal.members))} [{len(bal.members)} Used]</td>\n",
        f"<td>{sticky}</td><td>{'On' if bal.nofailover else 'Off'}</td>\n",
        f"<td>{int(bal.timeout)}</td><td>{bal.max_attempts}</td>\n",
        f"<td>{e(bal.lbmethod)}</td>\n",
        f"<td>{e(facts.paths.get(bal.name, ''))}</td>\n",
        "<td>Yes</td>\n</tr>\n</table>\n<br />",
        "\n\n<table><tr><th>Worker URL</th><th>Route</th><th>RouteRedir</th><th>Factor</th>"
        "<th>Set</th><th>Status</th><th>Elected</th><th>Busy</th><th>Load</th><th>To</th>"
        "<th>From</th></tr>\n",
    ]
    for w in bal.members:
        href = f"{escape_uri(uri)}?b={short}&amp;w={escape_uri(w.url)}&amp;nonce={bal.nonce}"
        out.append(
            f'<tr>\n<td><a href="{href}">{e(w.url)}</a></td><td>{e(w.route)}</td>'
            f"<td>{e(w.redirect)}</td><td>{w.lbfactor / 100:.2f}</td><td>{w.lbset}</td>"
            f"<td>{w.status_text}</td><td>{w.elected}</td><td>{w.busy}</td>"
            f"<td>{w.lbstatus}</td><td>{strfsize(w.transferred)}</td>"
            f"<td>{strfsize(w.read)}</td></tr>\n"
        )
    out.append("</table>\n")
    return "".join(out)


def _hidden(bal: BalancerInfo) -> str:
    return (
        f"<input type=hidden name='b' id='b' value=\"{escape_html(short_name(bal.name))}\">\n"
        f"<input type=hidden name='nonce' id='nonce' value='{bal.nonce}'>\n</form>\n<hr />\n"
    )


def _form_head(uri: str) -> str:
    return (
        "<form method='POST' enctype='application/x-www-form-urlencoded' "
        f'action="{escape_uri(uri)}">\n'
    )


def _worker_form(bal: BalancerInfo, w: WorkerInfo, uri: str) -> str:
    e = escape_html
    out = [
        f"<h3>Edit worker settings for {e(w.url)}</h3>\n",
        _form_head(uri),
        "<table><tr><td>Load factor:</td><td><input name='w_lf' id='w_lf' type=text ",
        f"value='{w.lbfactor / 100:.2f}'></td></tr>\n",
        "<tr><td>LB Set:</td><td><input name='w_ls' id='w_ls' type=text ",
        f"value='{w.lbset}'></td></tr>\n",
        "<tr><td>Route:</td><td><input name='w_wr' id='w_wr' type=text ",
        f'value="{e(w.route)}"></td></tr>\n',
        "<tr><td>Route Redirect:</td><td><input name='w_rr' id='w_rr' type=text ",
        f'value="{e(w.redirect)}"></td></tr>\n',
        "<tr><td>Status:</td><td><table><tr>",
        "".join(f"<th>{label}</th>" for _letter, label in FLAG_RADIOS),
        "</tr>\n<tr>",
        "".join(_radio(f"w_status_{letter}", w.has_flag(letter)) for letter, _ in FLAG_RADIOS),
        "</tr></table></td></tr>\n",
        "<tr><td colspan='2'><input type=submit value='Submit'></td></tr>\n",
        f"</table>\n<input type=hidden name='w' id='w' value=\"{escape_uri(w.url)}\">\n",
        _hidden(bal),
    ]
    return "".join(out)


def _balancer_form(bal: BalancerInfo, uri: str) -> str:
    e = escape_html
    options = "".join(
        f"<option value='{m}'{' selected ' if m == bal.lbmethod else ''}>{m}\n" for m in METHODS
    )
    sticky = e(sticky_text(bal))
    return "".join(
        [
            f"<h3>Edit balancer settings for {e(bal.name)}</h3>\n",
            _form_head(uri),
            "<table>\n<tr><td>LBmethod:</td>",
            f"<td>\n<select name='b_lbm' id='b_lbm'>{options}</select>\n</td></tr>\n",
            "<tr><td>Timeout:</td><td><input name='b_tmo' id='b_tmo' type=text ",
            f"value='{int(bal.timeout)}'></td></tr>\n",
            "<tr><td>Failover Attempts:</td><td><input name='b_max' id='b_max' type=text ",
            f"value='{bal.max_attempts}'></td></tr>\n",
            "<tr><td>Disable Failover:</td>",
            _radio("b_sforce", bal.nofailover),
            "</tr>\n",
            "<tr><td>Sticky Session:</td><td><input name='b_ss' id='b_ss' size=64 type=text ",
            f"value =\"{sticky}\">&nbsp;&nbsp;&nbsp;&nbsp;(Use '-' to delete)</td></tr>\n",
            "<tr><td colspan=2><input type=submit value='Submit'></td></tr>\n</table>\n",
            _hidden(bal),
        ]
    )


def render_xml(snapshot: ProxySnapshot, facts: PageFacts) -> str:
    """`xml=1`: the `httpd:manager` dump of every balancer and member."""
    e = escape_html
    out = [
        "<?xml version='1.0' encoding='UTF-8' ?>\n",
        "<httpd:manager xmlns:httpd='http://httpd.apache.org'>\n  <httpd:balancers>\n",
    ]
    for bal in snapshot.balancers:
        out += [
            "    <httpd:balancer>\n",
            f"      <httpd:name>{e(bal.name)}</httpd:name>\n",
            f"      <httpd:nonce>{bal.nonce}</httpd:nonce>\n",
        ]
        if bal.sticky_cookie:
            out.append(f"      <httpd:stickysession>{e(bal.sticky_cookie)}</httpd:stickysession>\n")
            out.append(f"      <httpd:nofailover>{_on(bal.nofailover)}</httpd:nofailover>\n")
        out.append(f"      <httpd:timeout>{int(bal.timeout)}</httpd:timeout>\n")
        out.append(f"      <httpd:maxattempts>{bal.max_attempts}</httpd:maxattempts>\n")
        out.append(f"      <httpd:lbmethod>{e(bal.lbmethod)}</httpd:lbmethod>\n")
        if bal.sticky_cookie:
            scolon = _on(facts.scolon.get(bal.name, False))
            out.append(f"      <httpd:scolonpathdelim>{scolon}</httpd:scolonpathdelim>\n")
        out.append("      <httpd:workers>\n")
        for w in bal.members:
            out.append(_worker_xml(w, facts.members.get((bal.name, w.url)), facts))
        out.append("      </httpd:workers>\n    </httpd:balancer>\n")
    out.append("  </httpd:balancers>\n</httpd:manager>")
    return "".join(out)


def _on(flag: bool) -> str:
    return "On" if flag else "Off"


def _worker_xml(w: WorkerInfo, member: BackendMember | None, facts: PageFacts) -> str:
    e = escape_html
    tag = "          <httpd:{0}>{1}</httpd:{0}>\n".format
    lines = ["        <httpd:worker>\n", tag("name", e(w.url))]
    if member is not None:
        p = member.params
        hmax = p.max if p.max is not None else facts.threads_per_child
        lines += [
            tag("scheme", member.scheme),
            tag("hostname", e(member.host)),
            tag("loadfactor", f"{w.lbfactor / 100:.2f}"),
            tag("port", member.port),
            tag("min", p.min),
            tag("smax", p.smax if p.smax is not None else hmax),
            tag("max", hmax),
            tag("ttl", int(p.ttl or 0)),
        ]
        if p.timeout is not None:
            lines.append(tag("timeout", int(p.timeout)))
        if p.acquire is not None:
            lines.append(tag("acquire", int(p.acquire * 1000)))
    lines.append(tag("status", w.status_text))
    if w.error_time > 0:
        lines.append(tag("error_time", formatdate(w.error_time, usegmt=True)))
    lines += [
        tag("retries", w.retries),
        tag("lbstatus", w.lbstatus),
        tag("loadfactor", f"{w.lbfactor / 100:.2f}"),
        tag("transferred", w.transferred),
        tag("read", w.read),
        tag("elected", w.elected),
        tag("route", e(w.route)),
        tag("redirect", e(w.redirect)),
        tag("busy", w.busy),
        tag("lbset", w.lbset),
    ]
    if member is not None and member.params.connection_timeout is not None:
        lines.append(tag("connectiontimeout", int(member.params.connection_timeout * 1000)))
    lines.append(tag("retry", int(w.retry)))
    lines.append("        </httpd:worker>\n")
    return "".join(lines)


# -- the handler -------------------------------------------------------------------------------
def read_params(exchange: Exchange) -> dict[str, str]:
    """A GET's query (w, b, nonce and xml only), or a POST's body (its first 1024 bytes)."""
    request = exchange.request
    if request.method == "POST":
        body = request.body.read(POST_LIMIT) if request.content_length != 0 else b""
        return parse_params(body.decode("latin-1"), None)
    return parse_params(request.query, GET_PARAMS) if request.query else {}


def make_manager_handler(
    config: ServerConfig, proxy_state: ProxyState | None, error_log
) -> Handler:
    """The `balancer-manager` handler for one configuration and the shared proxy state."""
    facts = PageFacts(config)
    empty = ProxySnapshot((), ())

    def manager(exchange: Exchange) -> None:
        request = exchange.request
        if request.method not in ("GET", "HEAD", "POST"):
            exchange.send_error(405, headers=[("Allow", "GET,POST")])
            return
        params = read_params(exchange)
        host = request_host(exchange)
        referer = request.header("referer")
        if params and not same_origin(referer, host):
            error_log.log(
                "error",
                "ignoring params in balancer-manager cross-site access",
                module="proxy_balancer",
                ah="AH10187",
                client=f"{exchange.conn.client_addr}:{exchange.conn.client_port}",
                referer=referer,
            )
            params = {}
        snapshot = proxy_state.snapshot() if proxy_state is not None else empty
        bsel = wsel = None
        if "b" in params:
            bsel = _find_balancer(snapshot, PREFIX + params["b"].lower())
        if bsel is not None and "w" in params:
            wsel = next((w for w in bsel.members if w.url == params["w"]), None)
        if bsel is not None and proxy_state is not None and _nonce_ok(bsel, params):
            apply_edits(proxy_state, bsel.name, wsel.url if wsel else None, params)
            snapshot = proxy_state.snapshot()
            bsel = snapshot.balancer(bsel.name)
            wsel = next((w for w in bsel.members if w.url == wsel.url), None) if wsel else None
        if "xml" in params:
            body = render_xml(snapshot, facts)
            content_type = "text/xml; charset=utf-8"
        else:
            body = render_page(snapshot, facts, host=host, uri=request.path, bsel=bsel, wsel=wsel)
            content_type = HTML_TYPE
        exchange.respond(
            "200 OK", [("Content-Type", content_type)], body.encode("latin-1", "replace")
        )

    return manager


def _find_balancer(snapshot: ProxySnapshot, name: str) -> BalancerInfo | None:
    return next((b for b in snapshot.balancers if b.name == name), None)


def _nonce_ok(bal: BalancerInfo, params: dict[str, str]) -> bool:
    """The form's nonce matches the balancer's; `nonce=None` (an empty nonce) checks nothing."""
    return not bal.nonce or params.get("nonce") == bal.nonce
