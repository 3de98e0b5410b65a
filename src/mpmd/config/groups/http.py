"""HTTP protocol settings and request limits (reference 3.2, 8.2), per virtual host.

config/build.py gathers these into HttpSettings; a <VirtualHost> inherits what it does not set.
"""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE, SV, TAKE1, Directive
from mpmd.config.validators import v_flag, v_int, v_nonneg, v_request_read_timeout, v_timeout

GROUP = "http"
TITLE = "HTTP protocol and limits (per virtual host)"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="Timeout",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="seconds",
        default=60.0,
        doc="Timeout duration (sec)",
        validate=v_timeout,
    ),
    Directive(
        name="KeepAlive",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="On|Off",
        default=True,
        doc="Whether persistent connections should be On or Off",
        validate=v_flag,
    ),
    Directive(
        name="KeepAliveTimeout",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="seconds|Nms",
        default=5.0,
        doc="Keep-Alive timeout duration (sec)",
        validate=v_timeout,
    ),
    Directive(
        name="MaxKeepAliveRequests",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="number",
        default=100,
        doc="Maximum number of Keep-Alive requests per connection, or 0 for infinite",
        validate=v_int,
    ),
    Directive(
        name="RequestReadTimeout",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="[handshake=..] [header=..] [body=..]",
        default={"handshake": (0, 0, 0), "header": (20, 40, 500), "body": (20, 0, 500)},
        default_doc="header=20-40,MinRate=500 body=20,MinRate=500",
        doc="Set various timeout parameters for TLS handshake and reading request headers and body",
        validate=v_request_read_timeout,
    ),
    Directive(
        name="LimitRequestLine",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="bytes",
        default=8190,
        doc="Limit on maximum size of an HTTP request line",
        validate=v_nonneg,
    ),
    Directive(
        name="LimitRequestFieldSize",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="bytes",
        default=8190,
        doc="Limit on maximum size of an HTTP request header field",
        validate=v_nonneg,
    ),
    Directive(
        name="LimitRequestFields",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="number",
        default=100,
        doc="Limit (0 = unlimited) on max number of header fields in a request message",
        validate=v_nonneg,
    ),
    Directive(
        name="LimitRequestBody",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="bytes",
        default=1073741824,
        doc="Limit (in bytes) on maximum size of request message body",
        validate=v_nonneg,
    ),
)
