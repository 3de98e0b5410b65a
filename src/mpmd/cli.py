"""The command line: `mpmd` takes httpd's flags, `mpmctl` takes apachectl's verbs.

This module owns argument parsing, the -t/-S/-V/-M reports, and process control through the
PidFile (-k stop|restart|graceful|graceful-stop send TERM/HUP/USR1/WINCH, with apachectl's
messages). Serving itself is mpm/serve.py, imported only when the server really starts, so
the reports stay fast and never import application code.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import sys
from collections.abc import Callable, Sequence

from mpmd import SERVER_SOFTWARE, __version__
from mpmd.config import directives as reg
from mpmd.config.build import load_config
from mpmd.config.model import MPM_NAMES, ServerConfig
from mpmd.config.syntax import STATIC_MODULES, ConfigError

PROG = "mpmd"
SIGNALS = {
    "stop": signal.SIGTERM,
    "restart": signal.SIGHUP,
    "graceful": signal.SIGUSR1,
    "graceful-stop": signal.SIGWINCH,
}
MPMCTL_VERBS = ("start", "stop", "restart", "graceful", "graceful-stop", "configtest",
                "status", "fullstatus")  # fmt: skip


def _parser(*, ctl: bool = False) -> argparse.ArgumentParser:
    """mpmd's flags; for mpmctl the positional argument is the verb instead of the app."""
    if ctl:
        p = argparse.ArgumentParser(
            prog="mpmctl",
            usage=f"mpmctl [mpmd options] {{{','.join(MPMCTL_VERBS)}}} [mpmd options]\n"
            "       mpmctl logs FILE... [--html OUT]\n"
            "       mpmctl plan --access-log FILE --config FILE... [--scale K] [--json]\n"
            "       mpmctl advise [-f CONFIG | --app MODULE:CALLABLE] [--access-log FILE] [--json]",
            description="Control mpmd the way apachectl controls httpd. Without a verb the "
            "options go to mpmd itself.",
        )
        p.add_argument("verb", nargs="?", choices=MPMCTL_VERBS, metavar="VERB",
                       help="start: start detached; stop, restart, graceful, graceful-stop: "
                       "signal the server in PidFile (restart and graceful test the "
                       "configuration first); configtest: check the configuration; status, "
                       "fullstatus: print the scoreboard; logs FILE...: summarise access and "
                       "error logs (mpmctl logs --help); plan: replay an access log through "
                       "configurations (mpmctl plan --help); advise: recommend an MPM and its "
                       "pool (mpmctl advise --help)")  # fmt: skip
    else:
        p = argparse.ArgumentParser(
            prog=PROG,
            description="Apache httpd's prefork/worker/event MPMs for Python WSGI applications.",
        )
        p.add_argument("app", nargs="?", help="module:callable to mount at / (gunicorn style)")
        p.add_argument("--interface", choices=("wsgi", "asgi"),
                       help="how to call the app: WSGI or ASGI (default: detected)")  # fmt: skip
    p.add_argument("-f", dest="file", metavar="FILE", help="configuration file")
    p.add_argument("-d", dest="server_root", metavar="SERVERROOT", help="ServerRoot")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME",
                   help="define a name for <IfDefine name>")  # fmt: skip
    p.add_argument("-C", dest="pre", action="append", default=[], metavar="DIRECTIVE",
                   help="process DIRECTIVE before reading the config file")  # fmt: skip
    p.add_argument("-c", dest="post", action="append", default=[], metavar="DIRECTIVE",
                   help="process DIRECTIVE after reading the config file")  # fmt: skip
    p.add_argument("-k", dest="command", choices=["start", *SIGNALS], help="control the server")
    p.add_argument("-t", dest="test", action="store_true", help="run syntax check only")
    p.add_argument("-S", dest="dump", action="store_true", help="show the effective settings")
    p.add_argument("-M", dest="modules", action="store_true", help="show loaded modules")
    p.add_argument("-V", dest="version", action="store_true", help="show version and build")
    p.add_argument("-v", dest="short_version", action="store_true", help="show version")
    p.add_argument("-X", dest="debug", action="store_true",
                   help="debug mode: one process, in the foreground")  # fmt: skip
    p.add_argument("--mpm", choices=MPM_NAMES, help="MPM when the config loads none")
    p.add_argument("--listen", "-b", "--bind", action="append", default=[],
                   metavar="HOST:PORT|unix:PATH",
                   help="listen here instead of the Listen directives (repeatable)")  # fmt: skip
    p.add_argument("--chdir", metavar="DIR",
                   help="change to DIR first; the app is imported from there (gunicorn's flag)")  # fmt: skip
    return p


class _Options:
    """Parsed flags plus the way to (re)load the configuration with them."""

    def __init__(self, ns: argparse.Namespace, argv: Sequence[str], prog: str = PROG) -> None:
        self.ns = ns
        self.command_line = shlex.join([prog, *argv])
        self.interface = getattr(ns, "interface", None)  # the positional app's, once known
        self.detected = False  # the interface was detected (not forced by --interface)

    def load(self, previous: ServerConfig | None = None) -> ServerConfig:
        ns = self.ns
        defines = list(ns.defines) + (["ONE_PROCESS"] if ns.debug else [])
        if ns.app is not None and self.interface is None:
            from mpmd.handlers.asgi.app import detect_interface

            self.interface, _why = detect_interface(ns.app, [os.getcwd()])
            self.detected = True
        config = load_config(ns.file, server_root=ns.server_root, defines=defines,
                             pre_directives=ns.pre, post_directives=ns.post, mpm=ns.mpm,
                             listen=ns.listen, app=ns.app, app_interface=self.interface or "wsgi",
                             previous=previous)  # fmt: skip
        if any(v.ssl is not None for v in (config.main, *config.vhosts)):
            from mpmd.http.tls import TlsContexts  # loads the certificates: errors are -t's

            TlsContexts.build(config)
        return config


def main(argv: Sequence[str] | None = None) -> int:
    """`mpmd`: httpd's command line. Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    return _run(_parser().parse_args(args), args)


def _run(ns: argparse.Namespace, args: list[str], prog: str = PROG) -> int:
    if ns.chdir:
        # -f and -d name paths relative to where mpmd was started
        ns.file = ns.file and os.path.abspath(ns.file)
        ns.server_root = ns.server_root and os.path.abspath(ns.server_root)
        try:
            os.chdir(ns.chdir)
        except OSError as err:
            print(f"{PROG}: --chdir {ns.chdir}: {err.strerror}", file=sys.stderr)
            return 1
    opts = _Options(ns, args, prog)
    if ns.short_version:
        print(f"Server version: {SERVER_SOFTWARE} (Python {platform.python_version()})")
        return 0
    if ns.command in SIGNALS:
        return _control(opts, ns.command)
    try:
        config = opts.load()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    if ns.test or ns.dump or ns.modules or ns.version:
        _print_warnings(config)
        if ns.version:
            print(version_report(config, ns))
        if ns.modules:
            print(modules_report(config))
        if ns.dump:
            print(settings_report(config))
        if ns.test:
            if not config.listeners:  # the server would stop with AH00451: say so now
                print(f"{config.config_file}: no Listen directive: the server would have no "
                      "listening sockets", file=sys.stderr)  # fmt: skip
                return 1
            print("Syntax OK")
        return 0
    if ns.command == "start":
        running = _running_pid(config.pid_file)
        if running is not None:
            print(f"{PROG} (pid {running}) already running")
            return 0
        _print_warnings(config)
        return _start_detached(opts, config)
    _print_warnings(config)
    if opts.detected and opts.interface == "asgi":
        print(f"{PROG}: {ns.app} is an ASGI application: it runs on the event MPM's ASGI loop "
              "(--interface wsgi calls it as WSGI)", file=sys.stderr)  # fmt: skip
    return _serve(opts, config, single_process=ns.debug)


def mpmctl_main(argv: Sequence[str] | None = None) -> int:
    """`mpmctl [mpmd options] VERB [mpmd options]`: apachectl's verbs on top of mpmd's flags."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(ctl=True)
    if not args:
        parser.print_help(sys.stderr)
        return 2
    if args[0] == "logs":  # an offline tool with its own arguments: no server, no config
        from mpmd.tools.logs import logs_main

        return logs_main(args[1:])
    if args[0] == "plan":  # the capacity planner: offline too
        from mpmd.tools.plan import plan_main

        return plan_main(args[1:])
    if args[0] == "advise":  # the tuning advisor: reads a running server, or probes --app
        from mpmd.tools.advise import advise_main

        return advise_main(args[1:])
    ns = parser.parse_args(args)
    verb = ns.verb
    ns.app = None
    if verb in ("status", "fullstatus"):
        return _status(_Options(ns, args, "mpmctl"), full=verb == "fullstatus")
    if verb == "configtest":
        ns.test = True
    elif verb is not None:
        ns.command = verb
    return _run(ns, args, "mpmctl")  # like apachectl: without a verb the flags go to the server


# --- reports ----------------------------------------------------------------------------


def _print_warnings(config: ServerConfig) -> None:
    for warning in config.warnings:
        print(warning, file=sys.stderr)


def _mpm_lines(config: ServerConfig) -> list[str]:
    m = config.mpm
    pairs: list[tuple[str, object]] = [("StartServers", m.start_servers)]
    if m.name == "prefork":
        pairs += [
            ("MinSpareServers", m.min_spare_servers),
            ("MaxSpareServers", m.max_spare_servers),
        ]
    else:
        pairs += [("MinSpareThreads", m.min_spare_threads), ("MaxSpareThreads", m.max_spare_threads),
                  ("ThreadsPerChild", m.threads_per_child), ("ThreadLimit", m.thread_limit)]  # fmt: skip
    pairs += [("ServerLimit", m.server_limit), ("MaxRequestWorkers", m.max_request_workers),
              ("MaxConnectionsPerChild", m.max_connections_per_child)]  # fmt: skip
    if m.name == "event":
        factor = m.async_request_worker_factor
        pairs.append(("AsyncRequestWorkerFactor", int(factor) if factor.is_integer() else factor))
    pairs += [("GracefulShutdownTimeout", m.graceful_shutdown_timeout),
              ("ListenBacklog", m.listen_backlog), ("MaxMemoryPerChild", m.max_memory_per_child)]  # fmt: skip
    return [f"{name} {value}" for name, value in pairs]


def settings_report(config: ServerConfig) -> str:
    """`mpmd -S`: comments describe listeners and vhosts; the directive lines are valid config."""
    lines = [f"# {SERVER_SOFTWARE} effective settings ({config.config_file or 'built-in default'})"]
    lines.append("# VirtualHost configuration:")
    main = config.main
    lines.append(f"#   default server {main.server_name}:{main.port} ({main.source})")
    for vhost in config.vhosts:
        names = " ".join((vhost.server_name, *vhost.server_aliases))
        lines.append(f"#   {' '.join(vhost.addresses)} namevhost {names} port {vhost.port} "
                     f"({vhost.source})")  # fmt: skip
    lines += [
        f'# ServerRoot: "{config.server_root}"',
        f'# Main DocumentRoot: "{main.document_root}"',
        f'# Main ErrorLog: "{main.error_log}"',
        f"# MPM: {config.mpm.name}",
    ]
    lines += [f"Listen {address}" for address in config.listeners]
    if any(address.path for address in config.listeners):
        lines.append(f"ListenUnixMode {config.listen_unix_mode:04o}")
        uid, gid = config.listen_unix_owner
        if (uid, gid) != (-1, -1):
            owner = (f"#{uid}" if uid >= 0 else "") + (f":#{gid}" if gid >= 0 else "")
            lines.append(f"ListenUnixOwner {owner}")
    if config.mpm.listen_buckets > 1:
        lines.append(f"# Listener buckets: {config.mpm.listen_buckets} (ListenCoresBucketsRatio)")
    lines.append(f'PidFile "{config.pid_file}"')
    if config.user:
        lines.append(f"User {config.user}")
    if config.group:
        lines.append(f"Group {config.group}")
    lines += _mpm_lines(config)
    return "\n".join(lines)


def modules_report(config: ServerConfig) -> str:
    """`mpmd -M`, shaped like `httpd -M`."""
    static = {ident for ident, _ in STATIC_MODULES}
    lines = ["Loaded Modules:"]
    for module in config.modules:
        lines.append(f" {module} ({'static' if module in static else 'shared'})")
    return "\n".join(lines)


def version_report(config: ServerConfig, ns: argparse.Namespace) -> str:
    """`mpmd -V`, shaped like `httpd -V`."""
    threaded = config.mpm.name != "prefork"
    bits = "64" if sys.maxsize > 2**32 else "32"
    return "\n".join([
        f"Server version: {SERVER_SOFTWARE} (Python {platform.python_version()})",
        f"Server built:   mpmd {__version__} on {platform.python_implementation()}",
        f"Architecture:   {bits}-bit",
        f"Server MPM:     {config.mpm.name}",
        f"  threaded:     {'yes (fixed thread count)' if threaded else 'no'}",
        "    forked:     yes (variable process count)",
        "Server compiled with....",
        f' -D HTTPD_ROOT="{config.server_root}"',
        f' -D SERVER_CONFIG_FILE="{config.config_file or "(built-in default)"}"',
        f' -D DEFAULT_PIDLOG="{reg.BY_NAME["pidfile"].default}"',
        f' -D DEFAULT_ERRORLOG="{reg.BY_NAME["errorlog"].default}"',
        f' -D DEFAULT_MPM="{ns.mpm or "event"}"',
    ])  # fmt: skip


# --- process control --------------------------------------------------------------------


def _read_pid(pid_file: str) -> int | None:
    try:
        with open(pid_file) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(pid_file: str) -> int | None:
    pid = _read_pid(pid_file)
    return pid if pid is not None and _alive(pid) else None


def _control(opts: _Options, command: str) -> int:
    """-k stop|restart|graceful|graceful-stop, with apachectl's checks and messages."""
    try:
        config = opts.load()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    pid = _read_pid(config.pid_file)
    if pid is None or not _alive(pid):
        status = f"{PROG} (no pid file) not running" if pid is None else (
            f"{PROG} (pid {pid}?) not running")  # fmt: skip
        if command in ("restart", "graceful"):
            print(f"{PROG} not running, trying to start")
            _print_warnings(config)
            return _start_detached(opts, config)
        print(status)
        return 0
    if command in ("restart", "graceful"):
        _print_warnings(config)
    os.kill(pid, SIGNALS[command])
    return 0


def _status(opts: _Options, *, full: bool) -> int:
    """mpmctl status|fullstatus: read the running server's scoreboard (ScoreBoardFile, else
    PidFile -> pid -> the default path)."""
    from mpmd.handlers.status import StatusFacts, StatusView, render_terminal
    from mpmd.mpm.scoreboard import Scoreboard, default_path

    try:
        config = opts.load()
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    pid = _read_pid(config.pid_file)
    if pid is None or not _alive(pid):
        print(
            f"{PROG} (no pid file) not running"
            if pid is None
            else f"{PROG} (pid {pid}?) not running"
        )
        return 1
    path = config.scoreboard_file or default_path(pid)
    try:
        scoreboard = Scoreboard.attach(path)
    except (OSError, ValueError) as err:
        print(f"{PROG} (pid {pid}): cannot read the scoreboard {path}: {err}", file=sys.stderr)
        return 1
    try:
        view = StatusView(scoreboard.snapshot(), StatusFacts(config))
        print(render_terminal(view, full=full, pid=pid), end="")
    finally:
        scoreboard.close()
    return 0


def _serve(
    opts: _Options,
    config: ServerConfig,
    *,
    single_process: bool,
    on_started: Callable[[], None] | None = None,
) -> int:
    from mpmd.mpm.serve import serve  # lazy: the reports never import the process machinery
    from mpmd.mpm.startup import StartupError

    current = [config]

    def reload() -> ServerConfig:
        current[0] = opts.load(previous=current[0])
        return current[0]

    try:
        return serve(config, single_process=single_process, reload=reload,
                     command_line=opts.command_line, on_started=on_started)  # fmt: skip
    except StartupError as err:  # Apache's start-up messages go to stderr; exit 1
        print(*err.lines, sep="\n", file=sys.stderr)
        return 1


_STARTED = b"\0started\n"


def _start_detached(opts: _Options, config: ServerConfig) -> int:
    """Double fork so the server is re-parented to init and has no controlling terminal.

    Until the server has started, its stderr is a pipe this process reads, so a start-up
    failure (AH00072 …) is printed here and `-k start` exits 1, as apachectl start does."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            report = pipe.read()  # EOF once the server started or exited
        sys.stderr.write(report.removesuffix(_STARTED).decode(errors="replace"))
        return 0 if report.endswith(_STARTED) else 1
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def started() -> None:
        sys.stderr.flush()
        os.write(2, _STARTED)
        os.dup2(devnull, 2)  # closes the pipe: the waiting command returns 0

    status = 1
    try:
        status = _serve(opts, config, single_process=False, on_started=started)
    finally:
        sys.stderr.flush()
        os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
