"""The event child's connection limit (reference 1.4) as pure arithmetic.

AsyncRequestWorkerFactor bounds the connections one child accepts: ThreadsPerChild plus
`factor` connections per idle thread, lingering closes not counted. Apache keeps the factor as
value x 16 (WORKER_FACTOR_SCALE), never below 16, and divides by 16 in integer arithmetic: a
factor below 1 counts as 1, and 2.5 as 2. The loop owns the counts; this module only decides,
so the rule is tested as a table.
"""

from __future__ import annotations

WORKER_FACTOR_SCALE = 16


def worker_factor(value: float) -> int:
    """The factor as Apache applies it: stored as value x 16, floored at 16, used as x / 16."""
    scaled = max(WORKER_FACTOR_SCALE, int(value * WORKER_FACTOR_SCALE))
    return scaled // WORKER_FACTOR_SCALE


def connections_above_limit(
    connections: int, lingering: int, idle: int, threads: int, factor: int, disabled: bool
) -> bool:
    """Apache's connections_above_limit(): True when the child must not accept.

    `disabled`: the listeners are already out of the poll set, which counts one idle thread
    less so that the child does not flap in and out of accepting."""
    if idle <= 0:
        return True
    if connections <= lingering:
        return False
    return connections - lingering >= threads + (idle - int(disabled)) * factor


def connections_over_limit(
    connections: int, lingering: int, idle: int, threads: int, factor: int
) -> int:
    """How many connections the child holds beyond what it may accept: after taking a client
    that waited while the child was full, this many idle keep-alive connections must close."""
    return max(0, connections - lingering - (threads + idle * factor))
