"""Per-process memory: the smaps_rollup reader, the parent's sample in the scoreboard, and how
the status page, /metrics and `mpmctl status` show it (no server; tests/test_status_memory_live.py
starts real ones)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mpmd.config.build import load_config
from mpmd.handlers import charts
from mpmd.handlers.metrics import ScoreboardCollector
from mpmd.handlers.status import StatusFacts, StatusView, render_auto, render_html
from mpmd.handlers.status_memory import memory_lines, memory_section
from mpmd.mpm.memory import (
    MemorySampler,
    ProcessMemory,
    parse_smaps_rollup,
    read_memory,
    sample_memory,
    total_kib,
)
from mpmd.mpm.scoreboard import HistorySample, Scoreboard
from mpmd.mpm.scoreboard_layout import MAGIC
from server import wait_for

# /proc/PID/smaps_rollup as Linux 6.x prints it: Pss_* lines must not be read as Pss.
ROLLUP = b"""\
55ddaede2000-7ffffdba0000 ---p 00000000 00:00 0                          [rollup]
Rss:               21764 kB
Pss:               13247 kB
Pss_Dirty:          9112 kB
Pss_Anon:           9112 kB
Pss_File:           4135 kB
Pss_Shmem:             0 kB
Shared_Clean:       8612 kB
Shared_Dirty:        100 kB
Private_Clean:       540 kB
Private_Dirty:      9112 kB
Referenced:        21764 kB
Anonymous:          9112 kB
Swap:                  0 kB
SwapPss:               0 kB
"""


def test_smaps_rollup_gives_pss_and_private_clean_plus_dirty():
    assert parse_smaps_rollup(ROLLUP) == ProcessMemory(pss_kib=13247, uss_kib=540 + 9112)
    assert parse_smaps_rollup(b"header [rollup]\nRss: 5 kB\n") == ProcessMemory(0, 0)


def test_read_memory_of_this_process_and_of_gone_or_zombie_ones():
    mine = read_memory(os.getpid())
    assert mine is not None and mine.uss_kib > 0 and mine.pss_kib > 0
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:  # exited, not yet reaped: a zombie has no memory to read
        wait_for(lambda: _state(pid) == "Z", timeout=10)
        assert read_memory(pid) is None
    finally:
        os.waitpid(pid, 0)
    assert read_memory(pid) is None  # reaped: gone


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]


def _board(tmp_path: Path, mpm: str = "prefork", processes: int = 3):
    conf = tmp_path / f"{mpm}.conf"
    conf.write_text(
        "LoadModule status_module modules/mod_status.so\nExtendedStatus On\n"
        f"Listen 127.0.0.1:8080\nServerName localhost\nPidFile {tmp_path}/pid\n"
    )
    config = load_config(str(conf), mpm=mpm)
    m = config.mpm
    board = Scoreboard.create(
        str(tmp_path / "sb"), m.server_limit, m.thread_limit, mpm,
        threads_per_child=m.threads_per_child, max_request_workers=m.max_request_workers,
    )  # fmt: skip
    for slot in range(processes):
        board.process(slot).start(4000 + slot, 0)
    return config, board


def test_the_sample_lands_in_the_process_records_the_parent_and_the_history(tmp_path):
    _, board = _board(tmp_path)
    assert board.snapshot().processes[0].pss_kib == 0  # a fresh child: not sampled yet
    child = subprocess.Popen(["sleep", "60"])  # a child whose /proc we can read
    gone = os.fork()  # a child that exited (and was reaped) since the parent listed it
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    try:
        board.process(0).start(child.pid, 0)
        board.process(1).start(gone, 0)
        sampled = sample_memory(board, [(0, child.pid), (1, gone)])
    finally:
        child.kill()
        child.wait()
    assert set(sampled) == {child.pid, os.getpid()}  # slot 0 and the parent (this process)
    snap = board.snapshot()
    kid, me = sampled[child.pid], sampled[os.getpid()]
    assert (snap.processes[0].pss_kib, snap.processes[0].uss_kib) == (kid.pss_kib, kid.uss_kib)
    assert snap.processes[1].pss_kib == snap.processes[1].uss_kib == 0  # skipped silently
    assert snap.parent_memory_kib == (me.pss_kib, me.uss_kib)
    both = (kid.pss_kib + me.pss_kib, kid.uss_kib + me.uss_kib)
    assert snap.memory_kib() == total_kib(sampled) == both
    board.process(2).set_memory(300, 100)
    assert snap.memory_kib() == both  # a snapshot is a copy
    assert board.snapshot().memory_kib() == (both[0] + 300, both[1] + 100)
    board.mark_process_dead(2)  # reaped: its memory leaves the totals with it
    assert board.snapshot().memory_kib() == both
    board.record_history(1000.0, memory_kib=(5000, 3000))
    board.record_history(1001.0)
    history = board.snapshot().history()
    assert (history[0].pss_kib, history[0].uss_kib) == (5000, 3000)
    assert (history[1].pss_kib, history[1].uss_kib) == (0, 0)
    board.unlink()


def test_the_layout_version_changed_with_the_records(tmp_path):
    assert MAGIC == b"MPMDSB03"
    _, board = _board(tmp_path)
    assert Scoreboard.attach(board.path).snapshot().processes[0].pid == 4000
    board.unlink()


def _sampled_board(tmp_path: Path, mpm: str):
    config, board = _board(tmp_path, mpm)
    _sample(board)
    return config, board


def _sample(board: Scoreboard) -> None:
    """What the parent's tick writes, with known numbers."""
    for slot, (pss, uss) in enumerate([(20480, 10240), (30720, 15360), (2048, 1024)]):
        board.process(slot).set_memory(pss, uss)
    board.set_parent_memory(40960, 20480)


def test_prefork_page_lists_each_child_then_children_parent_and_total(tmp_path):
    _, board = _sampled_board(tmp_path, "prefork")
    board.process(3).start(4003, 0)  # started since the last tick: `-`
    snap = board.snapshot()
    section = memory_section(snap, has_process_table=False)
    assert '<tr><td>0</td><td>4000</td><td>no</td><td title="20480 KiB">20.0 MB</td>' in section
    assert "<tr><td>3</td><td>4003</td><td>no</td><td>-</td><td>-</td></tr>" in section
    titles = re.findall(r'<tr class="(\w+)">.*?title="(\d+) KiB".*?title="(\d+) KiB"', section)
    assert titles == [
        ("children", "53248", "26624"),
        ("parent", "40960", "20480"),
        ("total", "94208", "47104"),
    ]
    assert "4 processes" in section
    lines = memory_lines(snap)
    assert "  slot   1 pid    4001      30720      15360" in lines
    assert "  parent   pid " + f"{os.getpid():>7}      40960      20480" in lines
    assert "  total  (5 processes)      94208      47104" in lines
    board.unlink()


def test_event_process_table_gains_memory_columns_and_auto_does_not(tmp_path):
    config, board = _board(tmp_path, "event")
    facts = StatusFacts(config)
    before = render_auto(StatusView(board.snapshot(), facts, now=2e9), "localhost")
    _sample(board)
    view = StatusView(board.snapshot(), facts, now=2e9)
    assert render_auto(view, "localhost") == before  # ?auto is Apache's, memory or not
    page = render_html(view, "localhost", "127.0.0.1", extra=memory_section(view.snap, True))
    assert '<th colspan="2">Memory</th>' in page and "<th>PSS</th><th>USS</th></tr>" in page
    assert '<td>0</td><td title="20480 KiB">20.0 MB</td><td title="10240 KiB">10.0 MB</td>' in page
    sum_row = page[page.index("<tr><td>Sum</td>") :].split("</tr>")[0]
    assert sum_row.endswith('<td title="53248 KiB">52.0 MB</td><td title="26624 KiB">26.0 MB</td>')
    section = page[page.index("<h2>Memory</h2>") :]
    assert "<td>4000</td>" not in section  # the children's rows are in the process table
    board.unlink()


def test_metrics_export_each_process_and_the_totals(tmp_path):
    config, board = _sampled_board(tmp_path, "worker")
    board.process(3).start(4003, 0)  # not sampled yet: no series
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoreboardCollector(config, board))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    pss = {k[1]: v for k, v in samples.items() if k[0] == "mpmd_process_pss_bytes"}
    assert pss[(("pid", "4001"), ("slot", "1"))] == 30720 * 1024
    assert pss[(("pid", str(os.getpid())), ("slot", "parent"))] == 40960 * 1024
    assert len(pss) == 4  # three children and the parent
    assert samples[("mpmd_memory_pss_bytes", ())] == sum(pss.values()) == 94208 * 1024
    uss = [v for k, v in samples.items() if k[0] == "mpmd_process_uss_bytes"]
    assert samples[("mpmd_memory_uss_bytes", ())] == sum(uss) == 47104 * 1024
    board.unlink()


def test_the_memory_chart_draws_pss_and_uss_of_the_history():
    start = 1_700_000_000_000_000
    samples = [
        HistorySample(start + i * 1_000_000, i, i, 1, 1, 0, 2, 0, 50_000 + i, 30_000)
        for i in range(5)
    ]
    section = charts.history_section(samples, 10, False)
    chart = next(svg for svg in section.split("<svg")[1:] if "<title>Memory</title>" in svg)
    assert "<title>PSS</title>" in chart and "<title>USS</title>" in chart
    assert ">100MB</text>" in chart  # 50,004 KiB = 51.2 MB: the axis tops out at 100 MB


def test_reading_leaks_no_descriptor():
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert read_memory(os.getpid()) is not None
    assert read_memory(2**22 + 1) is None  # above pid_max: never a process
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_the_sampler_waits_in_proportion_to_what_a_sample_cost(tmp_path):
    _, board = _board(tmp_path, processes=0)
    sampler = MemorySampler()
    first = sampler.sample(board, [], now=100.0)
    assert set(first) == {os.getpid()} and sampler.total_kib == total_kib(first)
    # the read took some time t > 0: the next is due t / 5 % later, not at the same instant
    assert sampler.next_at > 100.0
    assert sampler.sample(board, [], now=100.0) == {}
    assert sampler.total_kib == total_kib(first)  # the history repeats the last sample
    assert sampler.sample(board, [], now=sampler.next_at) != {}
    board.unlink()
