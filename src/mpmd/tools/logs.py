"""`mpmctl logs FILE…`: the command line of the log summary.

This module owns the verb's arguments, its messages and exit statuses; the figures are
tools/logsummary.py's, the HTML tools/logreport.py's. A LogFormat problem or an unreadable file
is one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mpmd.tools.accesslog import LogFormatError
from mpmd.tools.logreport import render_html
from mpmd.tools.logsummary import render_text, summarise


def logs_main(argv: Sequence[str]) -> int:
    """`mpmctl logs FILE… [--log-format FMT] [--config FILE] [--bucket S] [--html OUT]`."""
    p = argparse.ArgumentParser(
        prog="mpmctl logs",
        description="Summarise access and error logs (told apart by their lines): requests and "
        "bytes over time, status mix, slowest URLs, top clients and user agents, error-log "
        "patterns with their times.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="access or error log (.gz too)")
    p.add_argument("--log-format", metavar="FMT",
                   help="the access logs' LogFormat: a nickname (combined) or the format string; "
                   "default: the config's CustomLog, else detected")  # fmt: skip
    p.add_argument("--config", "-f", metavar="FILE", help="read LogFormat and CustomLog here")
    p.add_argument("--bucket", type=int, metavar="SECONDS", help="time bucket (default: auto)")
    p.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report")
    ns = p.parse_args(argv)
    if ns.bucket is not None and ns.bucket < 1:
        p.error("--bucket must be at least 1 second")
    try:
        summary = summarise(ns.files, log_format=ns.log_format, config=ns.config, bucket=ns.bucket)
    except LogFormatError as err:
        print(f"mpmctl logs: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"mpmctl logs: {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    sys.stdout.write(render_text(summary))
    if ns.html:
        try:
            with open(ns.html, "w", encoding="utf-8") as out:
                out.write(render_html(summary))
        except OSError as err:
            print(f"mpmctl logs: {ns.html}: {err.strerror}", file=sys.stderr)
            return 1
        print(f"HTML report written to {ns.html}")
    return 0
