"""Memory on the status views of real servers: every child's PSS and USS, the parent's and the
total, on the HTML page, /metrics and `mpmctl status`, against /proc read by the test itself;
`?auto` keeps Apache's lines."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from html.parser import HTMLParser

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server import Server, children_of, wait_for
from test_status import AUTO_NAMES_EVENT

pytestmark = pytest.mark.slow

CONFIG = """
LoadModule status_module modules/mod_status.so
ExtendedStatus On
WSGIApp /hello testapp:hello
<Location /server-status>
    SetHandler server-status
    Require local
</Location>
<Location /metrics>
    SetHandler metrics
    Require local
</Location>
"""
POOLS = {  # three children that stay: the pool policy neither grows nor shrinks it
    "prefork": "StartServers 3\nMinSpareServers 2\nMaxSpareServers 4\n",
    "event": "StartServers 3\n",
}
ASYNC_LINES = {"Processes", "Stopping", "ConnsTotal", "ConnsAsyncWaitIO", "ConnsAsyncWriting",
               "ConnsAsyncKeepAlive", "ConnsAsyncClosing"}  # fmt: skip


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("latin-1")


def proc_memory(pid: int) -> tuple[int, int] | None:
    """(PSS, USS) in KiB as the kernel reports them now, read independently of mpmd."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            for line in file:
                name, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    fields[name] = int(rest.split()[0])
    except OSError:
        return None
    if "Pss" not in fields:
        return None
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def close(sampled: tuple[int, int], actual: tuple[int, int]) -> bool:
    """The parent's sample is up to a second old, and between its read and ours a child
    changes only by what serving these few status requests allocates or frees (CPython's
    arenas, a few hundred KiB at most for a process of tens of MiB). So ±10 % or ±512 KiB,
    whichever is larger, separates a right reading from a wrong one (a field mixed up,
    bytes for KiB, another process's numbers) without tripping on that drift."""
    return all(near(s, a) for s, a in zip(sampled, actual, strict=True))


def near(sampled: int, actual: int) -> bool:
    return abs(sampled - actual) <= max(512, actual // 10)


class Tables(HTMLParser):
    """Every table of the page: its attributes and rows of (text, title) cells."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[tuple[dict, list[list[tuple[str, str]]]]] = []
        self.svg_titles: list[str] = []
        self._cell: list[str] | None = None
        self._title = ""
        self._in_svg = self._in_title = False
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self.tables.append((attributes, []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell, self._title = [], attributes.get("title") or ""
        elif tag == "svg":
            self._in_svg = True
        elif tag == "title" and self._in_svg:
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append(("".join(self._cell).strip(), self._title))
            self._cell = None
        elif tag == "svg":
            self._in_svg = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        elif self._in_title:
            self.svg_titles.append(data)


def kib(cell: tuple[str, str]) -> int:
    """The exact KiB a memory cell carries in its title (`12345 KiB`)."""
    assert cell[1].endswith(" KiB"), cell
    return int(cell[1].split()[0])


def page_memory(server: Server, mpm: str) -> dict[str, tuple[int, int]] | None:
    """pid -> (PSS, USS) of every child, plus `children`, `parent`, `total`, from one page."""
    tables = Tables(get(server.url("/server-status")))
    memory = next(rows for attrs, rows in tables.tables if attrs.get("class") == "mpmd-memory")
    found: dict[str, tuple[int, int]] = {}
    if mpm == "event":  # the children are rows of Apache's process table, PSS and USS last
        rows = tables.tables[0][1][2:-1]  # after the two header rows, before Sum
        cells = [(row[1][0], row[-2], row[-1]) for row in rows]
    else:
        cells = [(row[1][0], row[3], row[4]) for row in memory[1:-3]]
    for pid, pss, uss in cells:
        if pss[0] == "-":
            return None  # a child the parent has not sampled yet
        found[pid] = (kib(pss), kib(uss))
    for row in memory[-3:]:
        found[row[0][0].lower()] = (kib(row[3]), kib(row[4]))
    if mpm == "event":
        sum_row = tables.tables[0][1][-1]
        assert (kib(sum_row[-2]), kib(sum_row[-1])) == found["children"]
    if "Memory" not in tables.svg_titles:
        return None  # the history's memory chart: drawn from the third second on
    return found


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_every_child_shows_its_pss_and_uss_everywhere(tmp_path, mpm):
    with Server(tmp_path, CONFIG + POOLS[mpm], mpm=mpm) as server:
        get(server.url("/hello"))

        def matches_proc() -> dict[str, tuple[int, int]] | None:
            found = page_memory(server, mpm)
            children = {str(pid) for pid in children_of(server.pid)}
            if (
                found is None
                or len(children) != 3
                or set(found) - {"children", "parent", "total"} != children
            ):
                return None
            for pid in children:
                actual = proc_memory(int(pid))
                if actual is None or not close(found[pid], actual):
                    return None
            actual = proc_memory(server.pid)
            return found if actual is not None and close(found["parent"], actual) else None

        found = wait_for(matches_proc, timeout=20, interval=0.2)
        pids = sorted(set(found) - {"children", "parent", "total"})
        for column in (0, 1):  # totals are sums of what the same snapshot showed
            assert found["children"][column] == sum(found[pid][column] for pid in pids)
            assert found["total"][column] == found["children"][column] + found["parent"][column]
        # a child's first scrape or status page allocates (the exposition, the page): the
        # parent's next sample, within a second, catches up with it
        wait_for(lambda: _metrics_match(server, pids), timeout=10, interval=0.2)
        wait_for(lambda: _mpmctl_matches(server, pids), timeout=10, interval=0.2)
        _check_auto(server, mpm)


def _metrics_match(server: Server, pids: list[str]) -> bool:
    samples = [
        s
        for family in text_string_to_metric_families(get(server.url("/metrics")))
        for s in family.samples
    ]
    for kind, column in (("pss", 0), ("uss", 1)):
        per_process = {
            s.labels["pid"]: s.value for s in samples if s.name == f"mpmd_process_{kind}_bytes"
        }
        total = next(s.value for s in samples if s.name == f"mpmd_memory_{kind}_bytes")
        assert set(per_process) == {*pids, str(server.pid)}
        assert total == sum(per_process.values())  # one snapshot: exactly
        for pid in per_process:
            actual = proc_memory(int(pid))
            assert actual is not None
            if not near(int(per_process[pid]) // 1024, actual[column]):
                return False
    return True


def _mpmctl_matches(server: Server, pids: list[str]) -> bool:
    code = "import sys; from mpmd.cli import mpmctl_main; sys.exit(mpmctl_main())"
    for verb in ("status", "fullstatus"):
        result = subprocess.run(
            [sys.executable, "-c", code, verb, "-f", str(server.conf)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        block = result.stdout.split("Memory (KiB):", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
        rows = {line.split()[3]: tuple(map(int, line.split()[4:6])) for line in block[:-2]}
        assert sorted(rows) == pids
        parent = block[-2].split()
        assert parent[:3] == ["parent", "pid", str(server.pid)]
        total = block[-1].split()
        assert total[:3] == ["total", "(4", "processes)"]
        for column in (0, 1):
            expected = sum(r[column] for r in rows.values()) + int(parent[3 + column])
            assert int(total[3 + column]) == expected
        for pid, sampled in rows.items():
            actual = proc_memory(int(pid))
            if actual is None or not close(sampled, actual):
                return False
    return True


def _check_auto(server: Server, mpm: str) -> None:
    text = get(server.url("/server-status?auto"))
    names = [line.split(":", 1)[0] for line in text.splitlines()[1:]]
    expected = [n for n in AUTO_NAMES_EVENT if mpm == "event" or n not in ASYNC_LINES]
    assert [n for n in names if n != "CPULoad"] == expected
    assert "PSS" not in text and "USS" not in text and "emory" not in text
