"""Memory on the status views: each child's PSS and USS, the parent's, and the tree's total.

Apache's mod_status shows no memory, so all of this is mpmd's (docs/extensions.md): two cells
the event MPM's process table gains, a Memory section after the scoreboard key (one row per
child for prefork and worker, whose page has no process table; then the children, the parent
and the total), and the lines `mpmctl status` prints. `?auto` never shows any of it. It only
formats what the parent's tick sampled into the scoreboard (mpm/memory.py): never /proc.
"""

from __future__ import annotations

from mpmd.handlers.status_format import format_kbytes
from mpmd.mpm.scoreboard import Snapshot
from mpmd.mpm.scoreboard_process import ProcessInfo

_SECTION_HEAD = (
    '<hr /><h2>Memory</h2>\n<table rules="all" cellpadding="1%" class="mpmd-memory">\n'
    "<tr><th>Slot</th><th>PID</th><th>Stopping</th><th>PSS</th><th>USS</th></tr>\n"
)
_SECTION_NOTE = (
    "<p>PSS counts each shared page divided among the processes that map it, so the total is "
    "what the server uses; USS is what a child alone holds, what its exit gives back. "
    "The parent samples /proc every second (less often when a large pool would make that cost "
    "it more than 5 % of its time).</p>\n"
)


def kib_cell(kib: int) -> str:
    """One table cell: mod_status's units for people, the exact KiB in the title for tools;
    `-` until the parent's tick has sampled the process."""
    if not kib:
        return "<td>-</td>"
    return f'<td title="{kib} KiB">{format_kbytes(kib)}</td>'


def memory_cells(process: ProcessInfo) -> str:
    """The PSS and USS cells of one row of the event MPM's process table."""
    return kib_cell(process.pss_kib) + kib_cell(process.uss_kib)


def children_kib(snap: Snapshot) -> tuple[int, int]:
    """PSS and USS summed over the live children (the process table's Sum row)."""
    (pss, uss), (parent_pss, parent_uss) = snap.memory_kib(), snap.parent_memory_kib
    return pss - parent_pss, uss - parent_uss


def memory_sum_cells(snap: Snapshot) -> str:
    pss, uss = children_kib(snap)
    return kib_cell(pss) + kib_cell(uss)


def memory_section(snap: Snapshot, has_process_table: bool) -> str:
    """The Memory section; the children's rows only where Apache's page has no process table
    (prefork, worker: the event MPM's table carries them)."""
    live = snap.live_processes()
    rows = [_SECTION_HEAD]
    if not has_process_table:
        for p in live:
            old = " (old gen)" if p.generation != snap.generation else ""
            rows.append(
                f"<tr><td>{p.slot}</td><td>{p.pid}</td>"
                f"<td>{'yes' if p.quiescing else 'no'}{old}</td>{memory_cells(p)}</tr>\n"
            )
    children = children_kib(snap)
    parent = snap.parent_memory_kib
    total = snap.memory_kib()
    for label, pid, (pss, uss) in (
        ("Children", f"{len(live)} process{'' if len(live) == 1 else 'es'}", children),
        ("Parent", str(snap.parent_pid), parent),
        ("Total", "&nbsp;", total),
    ):
        rows.append(
            f'<tr class="{label.lower()}"><td>{label}</td><td>{pid}</td><td>&nbsp;</td>'
            f"{kib_cell(pss)}{kib_cell(uss)}</tr>\n"
        )
    rows += ["</table>\n", _SECTION_NOTE]
    return "".join(rows)


def memory_lines(snap: Snapshot) -> list[str]:
    """What `mpmctl status` prints: one line per child, the parent and the total, in KiB."""
    live = snap.live_processes()
    lines = [f"{'Memory (KiB):':<22} {'PSS':>10} {'USS':>10}"]
    for p in live:
        lines.append(f"  slot {p.slot:>3} pid {p.pid:>7} {p.pss_kib:>10} {p.uss_kib:>10}")
    pss, uss = snap.parent_memory_kib
    lines.append(f"  parent   pid {snap.parent_pid:>7} {pss:>10} {uss:>10}")
    pss, uss = snap.memory_kib()
    lines.append(f"  total {f'({len(live) + 1} processes)':>14} {pss:>10} {uss:>10}")
    return [*lines, ""]
