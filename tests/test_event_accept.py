"""The acceptor's sharing rule (event_accept.py) against sibling records, without a server.

The integration test (test_event_mpm.py) shows a burst spread over three real children; here
each sibling state the rule must ignore is checked on its own.
"""

from __future__ import annotations

from mpmd.mpm.event_accept import SHARE_SLACK, Acceptor


class Loop:
    """What Acceptor.over_share asks of the loop."""

    def __init__(self, connections: int) -> None:
        self.connections = connections

    def open_connections(self) -> int:
        return self.connections


class Sibling:
    """A sibling's process record as share_view() reads it."""

    def __init__(self, connections, *, pid=7, generation=3, quiescing=0, not_accepting=0):
        self.view = (pid, generation, quiescing, not_accepting, connections)

    def share_view(self):
        return self.view


def acceptor(mine: int, *siblings: Sibling) -> Acceptor:
    return Acceptor(
        Loop(mine),  # type: ignore[arg-type]
        [],
        threads=25,
        factor=2.0,
        max_connections=0,
        process_record=None,
        siblings=siblings,
        generation=3,
    )


def test_a_child_steps_back_only_past_the_slack_over_an_accepting_sibling() -> None:
    assert not acceptor(10, Sibling(10 - SHARE_SLACK)).over_share(0.0)
    assert acceptor(10, Sibling(10 - SHARE_SLACK - 1)).over_share(0.0)
    assert not acceptor(SHARE_SLACK, Sibling(0)).over_share(0.0)  # (never below the slack)
    assert not acceptor(10).over_share(0.0)  # no sibling: one child takes everything


def test_siblings_that_cannot_take_the_connection_do_not_count() -> None:
    for sibling in (
        Sibling(0, pid=0),  # an empty slot
        Sibling(0, generation=2),  # the old generation, finishing
        Sibling(0, quiescing=1),  # stopping
        Sibling(0, not_accepting=1),  # full (Apache's "accepting: no")
    ):
        assert not acceptor(10, sibling).over_share(0.0), sibling.view
    assert acceptor(10, Sibling(0, not_accepting=1), Sibling(2)).over_share(0.0)
