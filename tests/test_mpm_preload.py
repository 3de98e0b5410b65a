"""WSGIPreload with real processes: a Flask app imported once in the parent is shared.

Measures the unique memory (USS: Private_Clean + Private_Dirty from /proc/PID/smaps_rollup) of
idle prefork children serving a Flask app, with and without `WSGIPreload On`, and prints it
(run with -s to see it). The assertion is the point of the feature: preloaded children own
clearly less memory of their own.
"""

from __future__ import annotations

import pytest

from mpm_load import attach_scoreboard, child_titles, fetch, unique_memory_kib
from server import Server, wait_for

pytestmark = pytest.mark.slow
CHILDREN = 4


def _idle_child_uss(tmp_path, preload: str) -> list[int]:
    config = (
        f"WSGIApp / flaskapp:app\nWSGIPreload {preload}\nStartServers {CHILDREN}\n"
        f"MinSpareServers {CHILDREN}\nMaxSpareServers {CHILDREN + 2}\n"
    )
    with Server(tmp_path, config, mpm="prefork") as server:
        board = attach_scoreboard(server.pid)
        wait_for(lambda: len(child_titles(server.pid)) == CHILDREN, timeout=10)
        for _ in range(5 * CHILDREN):
            status, body = fetch(server.port, "/json")
            assert status == 200 and b'"framework":"flask"' in body
        wait_for(lambda: board.snapshot().worker_counts().idle == CHILDREN, timeout=5)
        board.close()
        return [unique_memory_kib(pid) for pid in child_titles(server.pid)]


def test_preloaded_flask_children_own_less_memory(tmp_path):
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    separate = _idle_child_uss(tmp_path / "off", "Off")
    preloaded = _idle_child_uss(tmp_path / "on", "On")
    mean_separate = sum(separate) / len(separate)
    mean_preloaded = sum(preloaded) / len(preloaded)
    print(
        f"\nUSS per idle prefork child (Flask): WSGIPreload Off {mean_separate:.0f} KiB "
        f"{separate}, On {mean_preloaded:.0f} KiB {preloaded}"
    )
    assert mean_preloaded < 0.75 * mean_separate
