"""mod_proxy, mod_proxy_balancer and mod_proxy_hcheck (reference 7): the reverse proxy.

ProxyPass, BalancerMember and the like take their meaning from the section they are written
in (the path-less ProxyPass of a <Location>, the balancer of a <Proxy balancer://...>), so
their validators only keep the words; config/proxy.py reads them in context and checks every
`key=value` with Apache's messages (config/proxy_params.py).
"""

from __future__ import annotations

from mpmd.config.declaration import (
    FLAG,
    ITERATE,
    SV,
    SVD,
    SVP,
    TAKE1,
    TAKE123,
    Directive,
    S,
)
from mpmd.config.proxy_params import (
    v_error_override,
    v_hc_expr,
    v_hc_tpsize,
    v_proxy_requests,
    v_proxy_status,
    v_proxy_timeout,
    v_proxy_via,
    v_raw,
)
from mpmd.config.validators import v_flag

GROUP = "proxy"
TITLE = "Reverse proxy and load balancer"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="ProxyPass",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="[path] !|url [key=value ...]",
        default=None,
        doc=(
            "Map a URL-path to a back end: http://host[:port]/path, ws://... or "
            "balancer://name; `!` excludes the path; no path inside <Location>"
        ),
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxyPassMatch",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="[regex] !|url [key=value ...]",
        default=None,
        doc="Like ProxyPass with a regular expression; $1..$9 in the URL take its groups",
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxyPassReverse",
        group=GROUP,
        contexts=SVD,
        syntax=TAKE123,
        usage="[path] url",
        default=None,
        doc=(
            "Rewrite Location, Content-Location and URI response headers starting with url "
            "(each member's for balancer://) to start with path"
        ),
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxyPreserveHost",
        group=GROUP,
        contexts=SVD,
        syntax=FLAG,
        usage="On|Off",
        default=False,
        doc="on if we should preserve host header while proxying",
        validate=v_flag,
    ),
    Directive(
        name="ProxyTimeout",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="seconds",
        default=None,
        default_doc="(Timeout)",
        doc="Set the timeout for proxied requests",
        validate=v_proxy_timeout,
    ),
    Directive(
        name="ProxyAddHeaders",
        group=GROUP,
        contexts=SVD,
        syntax=FLAG,
        usage="On|Off",
        default=True,
        doc="on if X-Forwarded-* headers should be added or completed",
        validate=v_flag,
    ),
    Directive(
        name="ProxyRequests",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="Off",
        default=False,
        doc="Forward proxying: mpmd is a reverse proxy only, so On is refused",
        validate=v_proxy_requests,
    ),
    Directive(
        name="ProxyVia",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="Off|On|Full|Block",
        default="Off",
        doc="Configure Via: proxy header header to one of: on | off | block | full",
        validate=v_proxy_via,
    ),
    Directive(
        name="ProxyErrorOverride",
        group=GROUP,
        contexts=SVD,
        syntax=ITERATE,
        usage="On|Off [code ...]",
        default=False,
        doc="use our error handling pages instead of the servers' we are proxying",
        validate=v_error_override,
    ),
    Directive(
        name="ProxyStatus",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="Off|On|Full",
        default=False,
        doc="Configure Status: proxy status to one of: on | off | full",
        validate=v_proxy_status,
    ),
    Directive(
        name="BalancerMember",
        group=GROUP,
        contexts=SVP,
        syntax=ITERATE,
        usage="[balancer://name] url [key=value ...]",
        default=None,
        doc=(
            "A balancer member: inside <Proxy balancer://name>, or naming the balancer first; "
            "http:// or ws:// URLs"
        ),
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxySet",
        group=GROUP,
        contexts=SVP,
        syntax=ITERATE,
        usage="[balancer://name|url] key=value ...",
        default=None,
        doc="Set parameters of a balancer or worker (inside <Proxy>, the section's)",
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxyHCExpr",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="name {expression}",
        default=None,
        doc="Define a health check condition ruleset expression",
        validate=v_hc_expr,
        repeatable=True,
    ),
    Directive(
        name="ProxyHCTemplate",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="name key=value ...",
        default=None,
        doc="Health check template",
        validate=v_raw,
        repeatable=True,
    ),
    Directive(
        name="ProxyHCTPsize",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="size",
        default=16,
        doc="Set size of health check thread pool (0: checks run one after the other)",
        validate=v_hc_tpsize,
    ),
)
