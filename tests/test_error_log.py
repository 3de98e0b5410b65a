"""ErrorLog: Apache's line shape (reference 2.5), LogLevel, escaping, tracebacks, wsgi.errors,
one write per line under threads, reopen after rename."""

from __future__ import annotations

import calendar
import os
import re
import syslog
import threading
import time

import pytest

from mpmd.logs.error import LEVELS, ErrorLog, errno_text, parse_log_level

NOW = calendar.timegm((2026, 11, 26, 4, 2, 28)) + 0.644944
PREFIX = re.compile(
    r"^\[(?P<time>\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2}\.\d{6} \d{4})\] "
    r"\[(?P<module>[\w-]+):(?P<level>\w+)\] \[pid (?P<pid>\d+):tid (?P<tid>\d+)\] (?P<rest>.*)$"
)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "error.log"


def read_lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_line_shape_matches_apache(log_path):
    log = ErrorLog(str(log_path))
    line = log.format_line(
        "notice",
        "Apache/2.4.71 (Debian) configured -- resuming normal operations",
        module="mpm_event",
        ah="AH00489",
        now=NOW,
    )
    pid, tid = os.getpid(), threading.get_native_id()
    assert line == (
        f"[Thu Nov 26 04:02:28.644944 2026] [mpm_event:notice] [pid {pid}:tid {tid}] "
        "AH00489: Apache/2.4.71 (Debian) configured -- resuming normal operations\n"
    )
    log.close()


def test_errno_and_client_order(log_path):
    log = ErrorLog(str(log_path))
    err = PermissionError(13, "Permission denied")
    log.log(
        "error",
        "access to /x denied",
        ah="AH00035",
        client="192.0.2.7:5555",
        errno_text=errno_text(err),
        referer="http://ref/",
    )
    log.close()
    (line,) = read_lines(log_path)
    match = PREFIX.match(line)
    assert match and (match["module"], match["level"]) == ("core", "error")
    assert int(match["pid"]) == os.getpid()
    assert match["rest"] == (
        "(13)Permission denied: [client 192.0.2.7:5555] AH00035: access to /x denied, "
        "referer: http://ref/"
    )


def test_level_filtering(log_path):
    log = ErrorLog(str(log_path), "warn")
    for level in LEVELS:
        log.log(level, f"at {level}")
    log.close()
    logged = [PREFIX.match(line)["level"] for line in read_lines(log_path)]
    # notice is written whatever LogLevel says, as in Apache
    assert logged == ["emerg", "alert", "crit", "error", "warn", "notice"]
    assert log.enabled("warn") and log.enabled("notice") and not log.enabled("info")


def test_trace_and_per_module_levels(log_path):
    log = ErrorLog(str(log_path), "error mpm_event:trace2 proxy_module:info")
    assert log.level == "error"
    assert log.enabled("trace2", "mpm_event") and not log.enabled("trace3", "mpm_event")
    assert log.enabled("info", "proxy") and not log.enabled("debug", "proxy")
    assert not log.enabled("warn", "core") and not log.enabled("warn")
    log.close()


def test_parse_log_level():
    assert parse_log_level("info") == (LEVELS.index("info"), {})
    assert parse_log_level("ssl:warn") == (LEVELS.index("warn"), {"ssl": LEVELS.index("warn")})
    with pytest.raises(ValueError, match="LogLevel requires level keyword"):
        parse_log_level("loud")


def test_message_escaping(log_path):
    log = ErrorLog(str(log_path))
    log.log("error", 'two\nlines "quoted" back\\slash \x01 caf\xe9')
    log.close()
    (line,) = read_lines(log_path)
    assert PREFIX.match(line)["rest"] == 'two\\nlines "quoted" back\\\\slash \\x01 caf\\xe9'


def test_exception_logs_traceback_lines(log_path):
    log = ErrorLog(str(log_path))

    def application():
        raise ZeroDivisionError("boom")

    try:
        application()
    except ZeroDivisionError:
        log.exception("Exception occurred processing WSGI app '/x'.", client="192.0.2.7:5555")
    log.close()
    lines = read_lines(log_path)
    matches = [PREFIX.match(line) for line in lines]
    assert all(m and (m["module"], m["level"]) == ("wsgi", "error") for m in matches)
    rests = [m["rest"].removeprefix("[client 192.0.2.7:5555] ") for m in matches]
    assert rests[0] == "Exception occurred processing WSGI app '/x'."
    assert rests[1] == "Traceback (most recent call last):"
    assert any("in application" in rest for rest in rests)
    assert rests[-1] == "ZeroDivisionError: boom"


def test_wsgi_errors_stream(log_path):
    log = ErrorLog(str(log_path))
    errors = log.stream_for("192.0.2.7:5555")
    assert errors.write("partial ") == 8
    assert not log_path.read_text()  # waits for the newline
    errors.write("line\nsecond\nthird")
    errors.writelines(["-more", "\n"])
    errors.write("unterminated")
    errors.flush()
    log.stream.write("no client\n")
    log.close()
    matches = [PREFIX.match(line) for line in read_lines(log_path)]
    assert [(m["module"], m["level"]) for m in matches] == [("wsgi", "error")] * 5
    assert [m["rest"] for m in matches] == [
        "[client 192.0.2.7:5555] partial line",
        "[client 192.0.2.7:5555] second",
        "[client 192.0.2.7:5555] third-more",
        "[client 192.0.2.7:5555] unterminated",
        "no client",
    ]
    with pytest.raises(TypeError):
        errors.write(b"bytes")


def test_stderr_target(capfd):
    log = ErrorLog("stderr", "info")
    log.log("info", "to standard error", ah="MP00001")
    log.close()
    err = capfd.readouterr().err
    assert PREFIX.match(err.rstrip("\n"))["rest"] == "MP00001: to standard error"


def test_syslog_target(monkeypatch):
    calls = []
    monkeypatch.setattr(syslog, "openlog", lambda *args: calls.append(("openlog", *args)))
    monkeypatch.setattr(syslog, "syslog", lambda *args: calls.append(args))
    monkeypatch.setattr(syslog, "closelog", lambda: None)
    log = ErrorLog("syslog:daemon", "info")
    log.log("warn", "to syslog", ah="MP00001")
    log.log("debug", "filtered out")
    log.close()
    assert calls[0] == ("openlog", "mpmd", syslog.LOG_PID | syslog.LOG_NDELAY, syslog.LOG_DAEMON)
    priority, line = calls[1]
    assert priority == syslog.LOG_WARNING and len(calls) == 2
    # syslog stamps the time itself: the line starts at [module:level], as Apache's
    assert line.startswith("[core:warn] [pid ") and line.endswith("] MP00001: to syslog")
    with pytest.raises(ValueError, match="unknown syslog facility 'local9'"):
        ErrorLog("syslog:local9")


def test_reopen_after_rename(log_path, tmp_path):
    log = ErrorLog(str(log_path))
    log.log("error", "before")
    os.rename(log_path, tmp_path / "error.log.1")
    log.reopen()
    log.log("error", "after")
    log.close()
    assert [PREFIX.match(line)["rest"] for line in read_lines(tmp_path / "error.log.1")] == [
        "before"
    ]
    assert [PREFIX.match(line)["rest"] for line in read_lines(log_path)] == ["after"]


def test_threads_never_interleave(log_path):
    log = ErrorLog(str(log_path))
    threads_count, per_thread = 8, 500

    def writer(n: int) -> None:
        for seq in range(per_thread):
            log.log("error", f"thread {n} seq {seq} " + "x" * (seq % 200) + " end")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    log.close()
    seen = set()
    tids = set()
    for line in read_lines(log_path):
        match = PREFIX.match(line)
        words = match["rest"].split(" ")
        assert words[0] == "thread" and words[-1] == "end"
        seen.add((words[1], words[3]))
        tids.add(match["tid"])
    assert len(seen) == threads_count * per_thread
    assert len(tids) == threads_count  # each thread's own native id


def test_capture_output(log_path):
    log = ErrorLog(str(log_path))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: fds 1 and 2 of the test runner stay untouched
        code = 1
        try:
            log.capture_output()
            os.write(2, b"stray write to stderr\n")
            os.write(1, b"stray write to stdout\n")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    log.close()
    assert os.waitstatus_to_exitcode(status) == 0
    assert read_lines(log_path) == ["stray write to stderr", "stray write to stdout"]
