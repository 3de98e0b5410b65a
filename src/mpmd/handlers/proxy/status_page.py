"""ProxyStatus On: the balancers' part of /server-status, as mod_proxy's status hook prints it.

It owns the formats of proxy_status_hook (the HTML tables after the worker table, the
`ProxyBalancer[i]Worker[n]...` lines of `?auto`), sizes by APR's `apr_strfsize`
(status_format.py). It only formats a ProxySnapshot: it never takes the state's lock
longer than the snapshot's copy and never writes the state.
"""

from __future__ import annotations

from mpmd.handlers.proxy.state import BalancerInfo, ProxySnapshot
from mpmd.handlers.status_format import strfsize

_LEGEND = (
    ("SSes", "Sticky session name"),
    ("Timeout", "Balancer Timeout"),
    ("Sch", "Connection scheme"),
    ("Host", "Backend Hostname"),
    ("Stat", "Worker status"),
    ("Route", "Session Route"),
    ("Redir", "Session Route Redirection"),
    ("F", "Load Balancer Factor"),
    ("Acc", "Number of uses"),
    ("Wr", "Number of bytes transferred"),
    ("Rd", "Number of bytes read"),
)


def sticky_text(info: BalancerInfo) -> str:
    """`NAME`, or `COOKIE | param` when the two differ ("" when there is no stickysession)."""
    if not info.sticky_cookie:
        return ""
    if info.sticky_cookie != info.sticky_param:
        return f"{info.sticky_cookie} | {info.sticky_param}"
    return info.sticky_cookie


def host_of(url: str) -> tuple[str, str]:
    """(scheme, hostname) of a worker URL, as the hook's Sch and Host columns show them."""
    scheme, _, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    if authority.startswith("["):
        return scheme, authority[: authority.find("]") + 1]
    return scheme, authority.rsplit(":", 1)[0]


def render_auto(snapshot: ProxySnapshot) -> str:
    """The `?auto` lines (AP_STATUS_SHORT), appended after `Scoreboard:`."""
    out = []
    for i, bal in enumerate(snapshot.balancers):
        out.append(f"ProxyBalancer[{i}]Name: {bal.name}\n")
        for n, w in enumerate(bal.members):
            key = f"ProxyBalancer[{i}]Worker[{n}]"
            out += [
                f"{key}Name: {w.url}\n",
                f"{key}Status: {w.status_text}\n",
                f"{key}Elected: {w.elected}\n",
                f"{key}Busy: {w.busy}\n",
                f"{key}Sent: {w.transferred >> 10}K\n",
                f"{key}Rcvd: {w.read >> 10}K\n",
            ]
    return "".join(out)


def render_html(snapshot: ProxySnapshot, escape) -> str:
    """The HTML section: per balancer a parameter table and a member table, then the key."""
    if not snapshot.balancers:
        return ""
    out = []
    for bal in snapshot.balancers:
        out.append(f"<hr />\n<h1>Proxy LoadBalancer Status for {escape(bal.name)}</h1>\n\n")
        out.append(
            '\n\n<table border="0"><tr><th>SSes</th><th>Timeout</th><th>Method</th></tr>\n<tr>'
        )
        out.append(f"<td>{escape(sticky_text(bal)) or ' - '}</td><td>{int(bal.timeout)}</td>")
        out.append(f"<td>{escape(bal.lbmethod)}</td>\n</table>\n")
        out.append(
            '\n\n<table border="0"><tr><th>Sch</th><th>Host</th><th>Stat</th>'
            "<th>Route</th><th>Redir</th><th>F</th><th>Set</th><th>Acc</th><th>Busy</th>"
            "<th>Wr</th><th>Rd</th></tr>\n"
        )
        for w in bal.members:
            scheme, host = host_of(w.url)
            out.append(
                f"<tr>\n<td>{scheme}</td><td>{escape(host)}</td><td>{w.status_text}"
                f"</td><td>{escape(w.route)}</td><td>{escape(w.redirect)}"
                f"</td><td>{w.lbfactor / 100:.2f}</td><td>{w.lbset}</td><td>{w.elected}</td>"
                f"<td>{w.busy}</td><td>{strfsize(w.transferred)}</td><td>{strfsize(w.read)}"
                "</td>\n</tr>\n"
            )
        out.append("</table>\n")
    out.append("<hr /><table>\n")
    out += [f"<tr><th>{th}</th><td>{td}</td></tr>\n" for th, td in _LEGEND]
    out.append("</table>")
    return "".join(out)
