"""The MPM's directives: pool sizes (reference 3.1), listeners and the files the parent keeps.

Every one is GLOBAL_ONLY, as in Apache: they size and place the one process tree, so they
cannot occur within <VirtualHost>. Defaults differ per MPM where Apache's do.
"""

from __future__ import annotations

from mpmd.config.declaration import EVENT, PREFORK, TAKE1, TAKE12, THREADED, Directive, PerMpm, S
from mpmd.config.validators import (
    v_factor,
    v_int,
    v_listen,
    v_nonneg,
    v_octal_mode,
    v_owner,
    v_positive,
    v_size,
    v_string,
)

GROUP = "mpm"
TITLE = "Processes and pools (MPM)"

DIRECTIVES: tuple[Directive, ...] = (
    Directive(
        name="StartServers",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(prefork=5, worker=3, event=3),
        doc="Number of child processes launched at server startup",
        validate=v_int,
        global_only=True,
    ),
    Directive(
        name="MinSpareServers",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(prefork=5),
        doc="Minimum number of idle children, to handle request spikes",
        validate=v_int,
        mpms=PREFORK,
        global_only=True,
    ),
    Directive(
        name="MaxSpareServers",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(prefork=10),
        doc="Maximum number of idle children",
        validate=v_int,
        mpms=PREFORK,
        global_only=True,
    ),
    Directive(
        name="MinSpareThreads",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(worker=75, event=75),
        doc="Minimum number of idle threads, to handle request spikes",
        validate=v_int,
        mpms=THREADED,
        global_only=True,
    ),
    Directive(
        name="MaxSpareThreads",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(worker=250, event=250),
        doc="Maximum number of idle threads",
        validate=v_int,
        mpms=THREADED,
        global_only=True,
    ),
    Directive(
        name="ThreadsPerChild",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(worker=25, event=25),
        doc="Number of threads each child creates",
        validate=v_int,
        mpms=THREADED,
        global_only=True,
    ),
    Directive(
        name="ThreadLimit",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(worker=64, event=64),
        doc=(
            "Maximum number of worker threads per child process for this run of Apache - Upper "
            "limit for ThreadsPerChild"
        ),
        validate=v_int,
        mpms=THREADED,
        global_only=True,
    ),
    Directive(
        name="ServerLimit",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(prefork=256, worker=16, event=16),
        doc="Maximum number of child processes for this run of Apache",
        validate=v_int,
        global_only=True,
    ),
    Directive(
        name="MaxRequestWorkers",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(prefork=256, worker=400, event=400),
        doc="Maximum number of threads alive at the same time",
        validate=v_int,
        aliases=("MaxClients",),
        global_only=True,
    ),
    Directive(
        name="MaxConnectionsPerChild",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=0,
        doc="Maximum number of connections a particular child serves before dying.",
        validate=v_int,
        aliases=("MaxRequestsPerChild",),
        global_only=True,
    ),
    Directive(
        name="AsyncRequestWorkerFactor",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=PerMpm(event=2.0),
        doc="How many additional connects will be accepted per idle worker thread",
        validate=v_factor,
        mpms=EVENT,
        global_only=True,
    ),
    Directive(
        name="GracefulShutdownTimeout",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="seconds",
        default=0,
        doc=(
            "Maximum time in seconds to wait for child processes to complete transactions during "
            "shutdown"
        ),
        validate=v_int,
        global_only=True,
    ),
    Directive(
        name="ListenBacklog",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=511,
        doc="Maximum length of the queue of pending connections, as used by listen(2)",
        validate=v_positive,
        global_only=True,
    ),
    Directive(
        name="ListenCoresBucketsRatio",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="number",
        default=0,
        doc=(
            "Ratio between the number of CPU cores (online) and the number of listeners' "
            "buckets (SO_REUSEPORT sockets; each child accepts from its bucket's only)"
        ),
        default_doc="0 (off)",
        validate=v_nonneg,
        global_only=True,
    ),
    Directive(
        name="MaxMemoryPerChild",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="size",
        default=0,
        doc=(
            "mpmd extension: recycle a child whose unique memory exceeds this many bytes (K/M/G "
            "suffix; 0 = off)"
        ),
        validate=v_size,
        global_only=True,
        extension=True,
    ),
    Directive(
        name="Listen",
        group=GROUP,
        contexts=S,
        syntax=TAKE12,
        usage="[IP:]port|unix:path [protocol]",
        default=None,
        doc=(
            "A port number or a numeric IP address and a port number, and an optional "
            "protocol; mpmd extension: unix:PATH listens on a Unix domain socket"
        ),
        validate=v_listen,
        global_only=True,
        repeatable=True,
    ),
    Directive(
        name="ListenUnixMode",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="octal-mode",
        default=0o666,
        default_doc="0666",
        doc=(
            "mpmd extension: the permission bits of every Listen unix: socket (connecting needs "
            "write permission)"
        ),
        validate=v_octal_mode,
        global_only=True,
        extension=True,
    ),
    Directive(
        name="ListenUnixOwner",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="user[:group]",
        default=None,
        doc=(
            "mpmd extension: the owner and group of every Listen unix: socket (a user needs "
            "root; a group: root or a member)"
        ),
        validate=v_owner,
        global_only=True,
        extension=True,
    ),
    Directive(
        name="PidFile",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="path",
        default="logs/httpd.pid",
        doc="A file for logging the server process ID",
        validate=v_string,
        global_only=True,
    ),
    Directive(
        name="ScoreBoardFile",
        group=GROUP,
        contexts=S,
        syntax=TAKE1,
        usage="path",
        default=None,
        doc=(
            "A file for Apache to maintain runtime process management information (mpmd: the "
            "scoreboard's shared memory, which mpmctl status reads; default "
            "/dev/shm/mpmd-PID.scoreboard)"
        ),
        validate=v_string,
        global_only=True,
    ),
)
