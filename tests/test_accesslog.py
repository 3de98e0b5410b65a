"""Reading access logs back (tools/accesslog.py, tools/logformats.py): lines written by mpmd's
own LogFormat compiler parse back to the values the exchange had, for many formats and time
zones; bad lines are counted with their line numbers; a format that lacks what is needed says
what to add; the format is found from a nickname, a config file or the lines; goaccess agrees."""

from __future__ import annotations

import calendar
import gzip
import json
import re
import shutil
import subprocess
import time

import pytest

from helpers import make_exchange, make_request, make_vhost
from mpmd.logs import logformat
from mpmd.logs.access import AccessLog
from mpmd.logs.logformat import COMBINED, COMMON, NICKNAMES, compile_format
from mpmd.tools.accesslog import FIELDS, AccessRecord, LogFormatError, LogParser, read_access_log
from mpmd.tools.logformats import CANDIDATES, detect_format, parser_for, resolve_format

START = calendar.timegm((2026, 11, 26, 4, 3, 23)) + 0.123456
VHOST = make_vhost(server_name="www.example.com")
AGENTS = ("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
          'curl/8.4.0 "quoted"', "Weird\\Agent\twith tab", "Bot\x01\xe9")  # fmt: skip
TARGETS = ("/", "/a/b?q=1&r=%22x%22", "/caf%C3%A9/x", "/static/app.css", "http://h.example/abs?x")


@pytest.fixture(params=["UTC", "Asia/Kolkata", "America/New_York"])
def zone(request, monkeypatch):
    """Local time in a zone with a whole, a half-hour and a negative offset; the log's %t
    caches are keyed by second, so they are cleared."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    logformat._clf_cache.clear()
    yield request.param
    monkeypatch.undo()
    time.tzset()
    logformat._clf_cache.clear()


def exchanges(count: int = 40):
    """(exchange, end time) pairs: clients, targets, statuses, body sizes (0 too), durations
    from microseconds to seconds, keep-alive counts and user agents that need escaping."""
    statuses = ("200 OK", "404 Not Found", "304 Not Modified", "500 Internal Server Error")
    for n in range(count):
        headers = [("host", "www.example.com"), ("user-agent", AGENTS[n % len(AGENTS)])]
        if n % 3:
            headers.append(("referer", f"http://ref.example/{n}"))
        method = ("GET", "POST", "HEAD")[n % 3]
        x, _ = make_exchange(make_request(method, TARGETS[n % len(TARGETS)], headers), VHOST,
                             client=f"10.0.{n % 5}.{n + 1}")  # fmt: skip
        x.start_time = START + n * 37.5 + n * 0.000731
        x.conn.requests = n % 4
        status = statuses[n % len(statuses)]
        body = b"" if status.startswith("304") or n % 7 == 0 else b"x" * (n * 13 + 1)
        x.respond(status, [("Content-Type", "text/plain; charset=utf-8")], body)
        x.finish()
        yield x, x.start_time + (0.000017 * n if n % 2 else 1.25 * n)


FORMATS = (
    COMMON,
    COMBINED,
    COMBINED + " %D",
    COMBINED + " %D %k",
    '%a %{usec}t %D %>s %B "%r"',
    '%h %t %{msec_frac}t "%r" %s %b %{ms}T %k',
    '%v:%p %h %l %u %t "%r" %>s %O "%{User-Agent}i" %{us}T %P %X %I',
    '%h [%{%d/%b/%Y:%H:%M:%S %z}t] "%U" %>s %b %T "%{Referer}i"',
    '%{msec}t %h %D "%{User-Agent}i" %{X-Forwarded-For}i %{HOME}e %{Content-Type}o %V',
    '%h %{begin:sec}t %{begin:usec_frac}t %{s}T "%m %U%q %H" %>s %b',
    "%h %{end:usec}t %D %>s",
)


def expected(fmt: str, x, end: float, parser: LogParser) -> AccessRecord:
    """What the record must hold, from the exchange (None where the format has no item)."""
    duration_us = int(end * 1_000_000) - int(x.start_time * 1_000_000)
    service = {1e-6: duration_us / 1e6, 1e-3: duration_us // 1000 / 1000,
               1.0: float(duration_us // 1_000_000), None: None}[parser.service_unit]  # fmt: skip
    usec = int(x.start_time * 1_000_000)
    if parser.time_resolution != "exact":
        start = float(usec // 1_000_000)
    elif "msec" in fmt:
        start = usec // 1000 / 1000
    else:
        start = usec / 1e6
    if "%{end:" in fmt:
        start = int(end * 1_000_000) / 1e6 - duration_us / 1e6
    size = x.head_bytes + x.bytes_out if "%O" in fmt else x.bytes_out
    path = x.request.path
    if "%U" in fmt:
        path = logformat._url_path(x)
    elif path[:1] != "/":
        path = "/" + path.split("://", 1)[1].partition("/")[2]
    agent = logformat.escape_logitem(x.request.header("user-agent"))
    values = {"time": start, "service": service, "status": x.status, "bytes": size,
              "client": x.conn.client_addr, "keepalive": x.conn.requests, "path": path,
              "user_agent": agent}  # fmt: skip
    return AccessRecord(**{k: (v if k in parser.available else None) for k, v in values.items()})


@pytest.mark.parametrize("fmt", FORMATS)
def test_lines_written_by_mpmd_parse_back_to_the_exchange(fmt, zone):
    write = compile_format(fmt, "\n")
    pairs = list(exchanges())
    parser = LogParser(fmt)
    result = parser.parse_lines(write(x, end) for x, end in pairs)
    assert (result.lines, result.skipped) == (len(pairs), 0)
    for (x, end), record in zip(pairs, result.records, strict=True):
        want = expected(fmt, x, end, parser)
        assert record.time == pytest.approx(want.time, abs=2e-6), (fmt, record)
        if want.service is None:
            assert record.service is None
        else:
            assert record.service == pytest.approx(want.service, abs=1e-9)
        assert record._replace(time=0, service=0) == want._replace(time=0, service=0)


def test_what_each_format_logs():
    combined_d = LogParser(COMBINED + " %D")
    assert combined_d.available == set(FIELDS) - {"keepalive", "queued"}
    assert "queued" in LogParser("%{usec}t %D %{mpmd-queued-ms}n").available
    assert (combined_d.time_resolution, combined_d.service_unit) == ("second", 1e-6)
    assert LogParser('%{usec}t %D "%r"').time_resolution == "exact"
    assert LogParser("%t %{msec_frac}t %{ms}T").time_resolution == "exact"
    assert LogParser("%h %T").time_resolution is None
    assert LogParser("%t %T").service_unit == 1.0
    assert LogParser("%{ms}T %D %T").service_unit == 1e-6  # the finest unit wins


def test_only_the_fields_asked_for_are_converted():
    parser = LogParser(COMBINED + " %D %k", ("time", "service"))
    x, end = next(exchanges())
    record = parser.parse_line(compile_format(COMBINED + " %D %k")(x, end))
    assert record.time == int(START)
    assert record[2:] == (None,) * 7
    assert parser.regex.groups == 2  # one capture group per converted item


def test_status_condition_logs_a_dash_that_parses():
    parser = LogParser("%h %400,501{User-agent}i %!200s %>s")
    record = parser.parse_line("1.2.3.4 - - 200")
    assert (record.user_agent, record.status) == (None, 200)
    assert parser.parse_line("1.2.3.4 curl/8 404 404").user_agent == "curl/8"


# -- bad input ---------------------------------------------------------------------------------


def test_bad_lines_are_counted_and_reported_with_their_line_numbers():
    write = compile_format(COMBINED + " %D", "\n")
    good = [write(x, end) for x, end in exchanges(6)]
    lines = [
        good[0],
        good[1][:45] + "\n",  # cut inside the request line, then the next line's newline
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 binary junk\n",
        good[2],
        "\n",  # blank: not a request, not an error
        re.sub(r'" \d{3} ', '" 2x0 ', good[3], count=1),
        good[4].replace("/Nov/", "/N0v/"),
        good[5][:-20],  # the last line cut short, without its newline
    ]
    result = LogParser(COMBINED + " %D").parse_lines(lines)
    assert (result.lines, len(result.records), result.skipped) == (8, 2, 5)
    reasons = dict(result.skipped_lines)
    assert sorted(reasons) == [2, 3, 6, 7, 8]
    assert reasons[2] == "truncated after %r"
    assert reasons[6].startswith("expected ' ' after %s at column 75: 'x0 ")  # `2` was %s
    assert reasons[7].startswith("expected %t at column")
    assert reasons[8].endswith("no newline at the end")
    summary = result.skipped_summary()
    assert summary.startswith("5 lines skipped: line 2 (")
    assert "line 8 (" in summary


def test_a_value_out_of_range_is_skipped_not_raised():
    result = LogParser("%h %t %>s").parse_lines(["1.2.3.4 [99/Nov/2026:99:03:23 +0000] 200\n"])
    assert result.records[0].time > 0  # timegm normalises, as Apache's own readers do
    result = LogParser("%h %{%Y-%m-%d}t %>s").parse_lines(["1.2.3.4 2026-13-45 200\n"])
    assert (result.skipped, result.skipped_lines) == (1, [(1, "a value out of range")])


def test_missing_service_time_says_to_add_percent_d():
    with pytest.raises(LogFormatError) as caught:
        LogParser(COMBINED).require(["time", "service"])
    assert str(caught.value) == (
        f"LogFormat {COMBINED!r}: the LogFormat has no service time: add %D"
    )
    assert LogParser('%D "%r"').missing(["time", "service", "keepalive"]) == [
        "the LogFormat has no request time: add %t (or %{usec}t for exact arrival times)",
        "the LogFormat has no keep-alive count: add %k",
    ]


def test_formats_that_cannot_be_read():
    with pytest.raises(LogFormatError, match="Unrecognized LogFormat directive %Z"):
        LogParser("%h %Z")
    with pytest.raises(LogFormatError, match=r"cannot read times logged as %\{%G\}t"):
        LogParser("%h %{%G}t")


# -- which format ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", CANDIDATES)
def test_each_common_format_is_detected_from_its_lines(fmt):
    write = compile_format(fmt, "\n")
    lines = [write(x, end) for x, end in exchanges(10)]
    assert detect_format(lines) == fmt


def test_undetectable_log_says_what_to_give():
    with pytest.raises(LogFormatError, match="give --log-format"):
        resolve_format(lines=["hello world\n"])


def test_format_from_a_config_file(tmp_path):
    log = tmp_path / "timed_log"
    conf = tmp_path / "mpmd.conf"
    conf.write_text(
        f'Listen 127.0.0.1:8999\nLogFormat "%h %t \\"%r\\" %>s %b %D %k" timed\n'
        f'CustomLog "{log}" timed\n<VirtualHost *:8999>\nServerName other\n'
        f'CustomLog "{tmp_path / "other_log"}" combined\n</VirtualHost>\n'
    )
    timed = '%h %t "%r" %>s %b %D %k'
    assert resolve_format(config=str(conf), access_log=str(log)) == (timed, f"CustomLog in {conf}")
    assert resolve_format(config=str(conf), access_log=str(tmp_path / "other_log"))[0] == COMBINED
    assert resolve_format("timed", config=str(conf)) == (timed, "nickname timed")
    assert resolve_format("vhost_combined") == (
        NICKNAMES["vhost_combined"],
        "nickname vhost_combined",
    )
    with pytest.raises(LogFormatError, match="2 formats"):
        resolve_format(config=str(conf))
    with pytest.raises(LogFormatError, match="unknown LogFormat nickname 'nope'"):
        resolve_format("nope", config=str(conf))


def test_parser_for_a_gzipped_rotation_with_what_the_planner_needs(tmp_path):
    write = compile_format(COMBINED + " %D", "\n")
    path = tmp_path / "access_log.1.gz"
    with gzip.open(path, "wt", encoding="latin-1") as out:
        out.writelines(write(x, end) for x, end in exchanges(12))
    parser = parser_for(str(path), fields=("time", "service"), needs=("time", "service"))
    assert (parser.format, parser.origin) == (COMBINED + " %D", "detected")
    assert len(read_access_log(str(path), parser).records) == 12
    with pytest.raises(LogFormatError, match="add %k"):
        parser_for(str(path), needs=("keepalive",))


@pytest.mark.skipif(shutil.which("goaccess") is None, reason="goaccess is not installed")
def test_goaccess_and_the_parser_agree_on_a_combined_log(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), COMBINED, buffered=True)
    for x, end in exchanges(120):
        log.log(x, end)
    log.close()
    # nginx's combined (0 bytes, not -), an IPv6 client, a request line that never came
    path.write_text(path.read_text(encoding="latin-1")
                    + '::1 - - [26/Nov/2026:05:00:00 +0000] "GET /n HTTP/1.1" 200 0 "-" "nginx"\n'
                    + '10.1.1.1 - - [26/Nov/2026:05:00:01 +0000] "-" 408 - "-" "-"\n',
                    encoding="latin-1")  # fmt: skip
    report = tmp_path / "report.json"
    subprocess.run(
        ["goaccess", str(path), "--log-format=COMBINED", "--no-global-config", "-o", str(report)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    general = json.loads(report.read_text())["general"]
    result = read_access_log(str(path), LogParser(COMBINED))
    assert result.skipped == general["failed_requests"] == 0
    assert len(result.records) == general["valid_requests"] == 122
    assert sum(r.bytes for r in result.records) == general["bandwidth"]
