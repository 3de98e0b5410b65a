"""What a child inherits from the parent and what it loads itself (issue 10, memory).

The parent builds before forking what every child would otherwise build for itself and calls
gc.freeze(), so a child's collections never write to (and so copy) the pages it inherited;
prometheus_client, the largest import a child could carry, is loaded only where a `metrics`
handler is mounted. A WSGI app in the serving child reports what it sees.
"""

from __future__ import annotations

import pytest

from mpm_load import fetch
from server import Server

APP = "WSGIApp /inherited testapp:inherited\n"
METRICS = '<Location "/metrics">\n    SetHandler metrics\n</Location>\n'


@pytest.mark.parametrize("mpm", ["prefork", "event"])
def test_child_inherits_frozen_objects_and_no_metrics_library(tmp_path, mpm):
    with Server(tmp_path, APP, mpm=mpm) as server:
        status, body = fetch(server.port, "/inherited")
    assert status == 200
    fields = dict(item.split("=") for item in body.decode().split())
    assert int(fields["frozen"]) > 0
    assert fields["prometheus"] == "False"


def test_metrics_handler_loads_prometheus_client(tmp_path):
    with Server(tmp_path, APP + METRICS, mpm="prefork") as server:
        status, body = fetch(server.port, "/inherited")
        metrics_status, metrics = fetch(server.port, "/metrics")
    assert status == 200 and b"prometheus=True" in body
    assert metrics_status == 200 and b"mpmd_requests_total" in metrics
