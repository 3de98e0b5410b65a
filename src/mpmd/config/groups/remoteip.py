"""mod_remoteip: the client address from a proxy's header or from the PROXY protocol."""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE, SV, TAKE1, Directive
from mpmd.config.remoteip import v_exceptions, v_header_name, v_remoteip_proxies
from mpmd.config.validators import v_flag, v_string

GROUP = "remoteip"
TITLE = "Real client addresses (mod_remoteip)"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="RemoteIPHeader",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="header-field",
        default=None,
        doc="Specifies a request header to trust as the client IP, e.g. X-Forwarded-For",
        validate=v_header_name,
    ),
    Directive(
        name="RemoteIPProxiesHeader",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="header-field",
        default=None,
        doc=(
            "Specifies a request header to record proxy IP's, e.g. X-Forwarded-By; if not given "
            "then do not record"
        ),
        validate=v_header_name,
    ),
    Directive(
        name="RemoteIPTrustedProxy",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="host|ip[/mask] ...",
        default=None,
        doc="Specifies one or more proxies which are trusted to present IP headers",
        validate=v_remoteip_proxies,
        repeatable=True,
    ),
    Directive(
        name="RemoteIPInternalProxy",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="host|ip[/mask] ...",
        default=None,
        doc=(
            "Specifies one or more internal (transparent) proxies which are trusted to present "
            "IP headers"
        ),
        validate=v_remoteip_proxies,
        repeatable=True,
    ),
    Directive(
        name="RemoteIPTrustedProxyList",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="filename",
        default=None,
        doc=(
            "The filename to read the list of trusted proxies, see the RemoteIPTrustedProxy "
            "directive"
        ),
        validate=v_string,
        repeatable=True,
    ),
    Directive(
        name="RemoteIPInternalProxyList",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage="filename",
        default=None,
        doc=(
            "The filename to read the list of internal proxies, see the RemoteIPInternalProxy "
            "directive"
        ),
        validate=v_string,
        repeatable=True,
    ),
    Directive(
        name="RemoteIPProxyProtocol",
        group=GROUP,
        contexts=SV,
        syntax=FLAG,
        usage="On|Off",
        default=False,
        doc=(
            "Enable PROXY protocol handling ('on', 'off') on the addresses of this server: a "
            "connection without a valid PROXY header (v1 or v2) is closed unanswered"
        ),
        validate=v_flag,
        repeatable=True,
    ),
    Directive(
        name="RemoteIPProxyProtocolExceptions",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="ip[/mask] ...",
        default=None,
        doc="Disable PROXY protocol handling for this list of networks in CIDR format",
        validate=v_exceptions,
        repeatable=True,
    ),
)
