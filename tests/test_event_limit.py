"""The event child's connection limit as a table: Apache's arithmetic (reference 1.4)."""

from __future__ import annotations

import pytest

from mpmd.mpm.event_limit import connections_above_limit, connections_over_limit, worker_factor


@pytest.mark.parametrize(
    ("value", "factor"),
    [(0.01, 1), (0.5, 1), (0.99, 1), (1, 1), (1.5, 1), (2, 2), (2.5, 2), (2.99, 2), (32, 32)],
)
def test_worker_factor_is_scaled_by_16_floored_at_16_and_divided_in_integers(value, factor):
    assert worker_factor(value) == factor


# connections, lingering, idle threads, ThreadsPerChild, factor, listeners disabled -> above
LIMITS = [
    (0, 0, 0, 25, 2, False, True),  # no idle thread: busy, whatever the count
    (74, 0, 25, 25, 2, False, False),  # 25 + 25 x 2 = 75
    (75, 0, 25, 25, 2, False, True),
    (75, 10, 25, 25, 2, False, False),  # lingering closes do not count
    (10, 10, 1, 25, 2, False, False),
    (72, 0, 25, 25, 2, True, False),  # disabled: one idle thread less, 73
    (73, 0, 25, 25, 2, True, True),
    (3, 0, 2, 2, worker_factor(0.5), False, False),  # 0.5 counts as 1: 2 + 2 x 1 = 4
    (4, 0, 2, 2, worker_factor(0.5), False, True),
]


@pytest.mark.parametrize(
    ("connections", "lingering", "idle", "threads", "factor", "disabled", "above"), LIMITS
)
def test_connections_above_limit(connections, lingering, idle, threads, factor, disabled, above):
    assert connections_above_limit(connections, lingering, idle, threads, factor, disabled) is above


@pytest.mark.parametrize(
    ("connections", "lingering", "idle", "over"),
    [(4, 0, 2, 0), (5, 0, 2, 1), (5, 1, 2, 0), (6, 0, 1, 3), (2, 0, 2, 0)],
)
def test_connections_over_limit_is_what_must_close_to_make_room(connections, lingering, idle, over):
    assert connections_over_limit(connections, lingering, idle, threads=2, factor=1) == over
