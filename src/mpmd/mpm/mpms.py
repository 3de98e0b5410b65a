"""The three MPMs as descriptors: everything the parent needs to know about each one.

DESIGN.md's rule, made concrete: an MPM is a policy plus a child main. The parent machinery
(signals, generations, reaping, the tick, the scoreboard) is written once and reads what is
MPM-specific from an `Mpm`: the function a forked child runs, the maintenance policy the
once-a-second tick applies, whether its children are threaded, and the messages Apache's module
prints. A fourth MPM is one more entry in MPMS; parent.py does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mpmd.config.model import MpmSettings
from mpmd.mpm.child import ChildSpec, StopSignal
from mpmd.mpm.event_child import serve_event
from mpmd.mpm.maintenance import Decision, SpawnState, prefork_maintenance, threaded_maintenance
from mpmd.mpm.prefork import serve_prefork
from mpmd.mpm.scoreboard import Snapshot
from mpmd.mpm.worker import serve_worker

_SIGUSR1_TEXT = "SIGUSR1 received.  Doing graceful restart"


@dataclass(frozen=True, slots=True)
class Messages:
    """The AH ids of the parent's notices, which each Apache MPM numbers on its own."""

    configured: str  # "... configured -- resuming normal operations"
    sigterm: str  # "caught SIGTERM, shutting down"
    sigwinch: str  # "caught SIGWINCH, shutting down gracefully"
    sighup: str  # "SIGHUP received.  Attempting to restart"
    sigusr1: tuple[str, str]  # graceful restart: prefork words it differently


@dataclass(frozen=True, slots=True)
class Mpm:
    name: str
    child_main: Callable[[ChildSpec, StopSignal], None]
    maintenance: Callable[[Snapshot, MpmSettings, SpawnState], Decision]
    threaded: bool  # a child serves several requests at once (a hung one is stopped gracefully)
    messages: Messages

    @property
    def module(self) -> str:
        """The module name in error-log lines: `[mpm_event:notice]`."""
        return f"mpm_{self.name}"


MPMS: dict[str, Mpm] = {
    mpm.name: mpm
    for mpm in (
        Mpm(
            name="prefork",
            child_main=serve_prefork,
            maintenance=prefork_maintenance,
            threaded=False,
            messages=Messages(
                "AH00163",
                "AH00169",
                "AH00170",
                "AH00173",
                ("AH00171", "Graceful restart requested, doing restart"),
            ),
        ),
        Mpm(
            name="worker",
            child_main=serve_worker,
            maintenance=threaded_maintenance,
            threaded=True,
            messages=Messages(
                "AH00292", "AH00295", "AH00296", "AH00298", ("AH00297", _SIGUSR1_TEXT)
            ),
        ),
        Mpm(
            name="event",
            child_main=serve_event,
            maintenance=threaded_maintenance,
            threaded=True,
            messages=Messages(
                "AH00489", "AH00491", "AH00492", "AH00494", ("AH00493", _SIGUSR1_TEXT)
            ),
        ),
    )
}
