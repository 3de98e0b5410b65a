"""User and Group (mod_unixd, reference 3.4): started as root, the parent opens what needs root
and every child runs as User/Group with its supplementary groups."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mpmd.config.build import load_config
from mpmd.mpm import child
from server import APPS, Server, call, children_of, wait_for

MPMS = ("prefork", "worker", "event")
ROOT = os.geteuid() == 0


def _status_ids(pid: int) -> tuple[list[int], list[int]]:
    """The real, effective, saved and filesystem uids and gids of `pid`."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return [int(x) for x in fields["Uid"]], [int(x) for x in fields["Gid"]]


def _all_dropped(pids: list[int], uid: int, gid: int) -> bool:
    """Every process of `pids` still alive runs with only `uid` and `gid`."""
    for pid in pids:
        try:
            ids = _status_ids(pid)
        except FileNotFoundError:
            continue  # it exited (recycled) since the listing
        if ids != ([uid] * 4, [gid] * 4):
            return False
    return bool(pids)


def _account_with_supplementary_groups() -> tuple[str, str] | None:
    """A (user, primary group) whose account has supplementary groups, if this system has one."""
    for group in grp.getgrall():
        for member in group.gr_mem:
            try:
                entry = pwd.getpwnam(member)
            except KeyError:
                continue
            if entry.pw_uid != 0 and entry.pw_gid != group.gr_gid:
                return member, grp.getgrgid(entry.pw_gid).gr_name
    return None


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="dropping privileges needs a server started as root")
@pytest.mark.parametrize("mpm", MPMS)
def test_children_run_as_user_and_group_and_cannot_write_roots_files(tmp_path, request, mpm):
    user, group = _account_with_supplementary_groups() or ("nobody", "nogroup")
    entry = pwd.getpwnam(user)
    gid = grp.getgrnam(group).gr_gid
    # A directory User can reach wherever the checkout lives (pytest's tmp_path is root's
    # only): the application, and a root-owned file that only its mode protects.
    shared = Path(tempfile.mkdtemp(prefix="mpmd-privileges-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    app = shared / "testapp.py"
    shutil.copyfile(APPS / "testapp.py", app)
    app.chmod(0o644)
    protected = shared / "root-owned"
    protected.write_text("root's\n")
    protected.chmod(0o644)
    config = (f'User {user}\nGroup {group}\nWSGIPythonPath "{shared}"\n'
              "WSGIApp / testapp:whoami\n")  # fmt: skip
    with Server(tmp_path, config, mpm=mpm) as server:
        status, _, body = call(server, "GET", f"/?path={protected}")
        assert status == 200
        uid_text, gid_text, groups, wrote = body.decode().split()
        assert (int(uid_text), int(gid_text)) == (entry.pw_uid, gid)
        assert sorted(int(g) for g in groups.split(",")) == sorted(set(os.getgrouplist(user, gid)))
        assert wrote == "denied" and protected.read_text() == "root's\n"
        # every child as User/Group; one the parent forks meanwhile is root until it drops
        # (child.py, before it serves), so a snapshot is taken again until none is between
        wait_for(lambda: _all_dropped(children_of(server.pid), entry.pw_uid, gid))
        assert _status_ids(server.pid)[0][0] == 0  # the parent keeps root: restarts, logs
        # the access log was opened by the parent, as root, for children that could not
        wait_for(lambda: "GET /?path=" in server.access_log.read_text())
        assert "MP00256" not in server.log_text()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("User no-such-user-here", "AH00543: mpmd: bad user name no-such-user-here"),
        ("Group no-such-group-here", "AH00544: mpmd: bad group name no-such-group-here"),
        ("User root", "has not been designed to serve pages while"),
        ("User #0", "has not been designed to serve pages while"),
        ("User #x", "AH00543: mpmd: bad user name #x"),
    ],
)
def test_wrong_user_or_group_fails_the_configuration_test(tmp_path, line, message):
    conf = tmp_path / "mpmd.conf"
    conf.write_text(f"Listen 127.0.0.1:8080\nServerName localhost\n{line}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mpmd", "-t", "-f", str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert f"{conf}:3: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_not_root_ignores_user_and_group_with_a_warning(tmp_path, monkeypatch):
    conf = tmp_path / "mpmd.conf"
    conf.write_text("Listen 127.0.0.1:8080\nServerName localhost\nUser nobody\nGroup nogroup\n")
    config = load_config(str(conf))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert child.privilege_warnings(config) == [
        "MP00256: User and Group are ignored: mpmd was not started as root"
    ]
    child.drop_privileges(config)  # nothing to do, nothing raised
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert child.privilege_warnings(config) == []
