"""The error log and the access logs (reference 6.1)."""

from __future__ import annotations

from mpmd.config.declaration import FLAG, ITERATE, SV, TAKE1, TAKE12, TAKE23, Directive, S
from mpmd.config.validators import (
    v_custom_log,
    v_error_log,
    v_flag,
    v_log_format,
    v_loglevel,
    v_string,
)

GROUP = "logs"
TITLE = "Logging"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="ErrorLog",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage='file|"|program"|syslog[:facility[:tag]]',
        default="logs/error_log",
        doc="The filename of the error log",
        validate=v_error_log,
    ),
    Directive(
        name="LogLevel",
        group=GROUP,
        contexts=SV,
        syntax=ITERATE,
        usage="[module:]level ...",
        default="warn",
        doc="Level of verbosity in error logging",
        validate=v_loglevel,
    ),
    Directive(
        name="LogFormat",
        group=GROUP,
        contexts=SV,
        syntax=TAKE12,
        usage="format [nickname]",
        default=None,
        doc="a log format string (see docs) and an optional format name",
        validate=v_log_format,
        repeatable=True,
    ),
    Directive(
        name="CustomLog",
        group=GROUP,
        contexts=SV,
        syntax=TAKE23,
        usage='file|"|program" format|nickname [env=[!]VAR]',
        default=None,
        doc=(
            "a file name, a custom log format string or format name, and an optional "
            '"env=" clause (mpmd has no "expr=")'
        ),
        validate=v_custom_log,
        repeatable=True,
    ),
    Directive(
        name="TransferLog",
        group=GROUP,
        contexts=SV,
        syntax=TAKE1,
        usage='file|"|program"',
        default=None,
        doc="the filename of the access log",
        validate=v_string,
        repeatable=True,
    ),
    Directive(
        name="BufferedLogs",
        group=GROUP,
        contexts=S,
        syntax=FLAG,
        usage="On|Off",
        default=False,
        doc="Enable Buffered Logging (experimental)",
        validate=v_flag,
    ),
)
