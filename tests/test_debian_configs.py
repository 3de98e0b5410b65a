"""Acceptance against the apache2 Debian package's own configuration files (installed by CI)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

APACHE = pathlib.Path("/etc/apache2")
pytestmark = pytest.mark.skipif(
    not (APACHE / "mods-available" / "mpm_event.conf").exists(),
    reason="the apache2 Debian package is not installed (/etc/apache2 absent)",
)
CLI = "import sys; from mpmd.cli import main; sys.exit(main())"

EXPECTED = {
    "prefork": {"StartServers": "5", "MinSpareServers": "5", "MaxSpareServers": "10",
                "ServerLimit": "256", "MaxRequestWorkers": "150", "MaxConnectionsPerChild": "0"},
    "worker": {"StartServers": "2", "MinSpareThreads": "25", "MaxSpareThreads": "75",
               "ThreadsPerChild": "25", "ThreadLimit": "64", "ServerLimit": "16",
               "MaxRequestWorkers": "150", "MaxConnectionsPerChild": "0"},
    "event": {"StartServers": "2", "MinSpareThreads": "25", "MaxSpareThreads": "75",
              "ThreadsPerChild": "25", "ThreadLimit": "64", "ServerLimit": "16",
              "MaxRequestWorkers": "150", "MaxConnectionsPerChild": "0",
              "AsyncRequestWorkerFactor": "2"},
}  # fmt: skip


def mpmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                          timeout=30, env=env)  # fmt: skip


@pytest.mark.parametrize("mpm", sorted(EXPECTED))
def test_debian_mpm_conf(tmp_path, mpm) -> None:
    conf = tmp_path / f"{mpm}.conf"
    conf.write_text(
        f"LoadModule mpm_{mpm}_module /usr/lib/apache2/modules/mod_mpm_{mpm}.so\n"
        f"Include {APACHE}/mods-available/mpm_{mpm}.conf\nListen 8080\n"
    )
    test = mpmd("-t", "-f", str(conf))
    assert (test.returncode, test.stdout, test.stderr) == (0, "Syntax OK\n", "")
    dump = mpmd("-S", "-f", str(conf))
    settings = dict(
        line.split(" ", 1) for line in dump.stdout.splitlines() if line and line[0] != "#"
    )
    for name, value in EXPECTED[mpm].items():
        assert settings[name] == value, name
    assert dump.stderr == ""


def _envvars() -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f"source {APACHE}/envvars && env -0"],
                         capture_output=True, check=True, timeout=10).stdout  # fmt: skip
    env = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return env


def test_debian_stock_apache2_conf() -> None:
    result = mpmd("-t", "-d", str(APACHE), "-f", str(APACHE / "apache2.conf"), env=_envvars())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Syntax OK\n"
    warnings = result.stderr.splitlines()
    assert warnings, "the stock config uses modules mpmd does not implement"
    for warning in warnings:
        assert "is not implemented by mpmd" in warning, warning
    dump = mpmd("-S", "-d", str(APACHE), "-f", str(APACHE / "apache2.conf"), env=_envvars())
    assert "MaxRequestWorkers 150" in dump.stdout.splitlines()
    assert "Listen 80" in dump.stdout.splitlines()


PROXY_MODULES = ("proxy", "proxy_http", "proxy_balancer", "lbmethod_byrequests",
                 "lbmethod_bytraffic", "lbmethod_bybusyness", "proxy_hcheck", "proxy_wstunnel",
                 "slotmem_shm")  # fmt: skip


def test_debian_proxy_modules_load_and_are_listed(tmp_path) -> None:
    includes = [
        f"Include {path}"
        for module in PROXY_MODULES
        for path in sorted((APACHE / "mods-available").glob(f"{module}.*"))
    ]
    conf = tmp_path / "proxy.conf"
    conf.write_text("\n".join([
        "Listen 8080", *includes,
        '<Proxy "balancer://mycluster">',
        '    BalancerMember "http://10.0.0.1:8080" route=a loadfactor=2',
        "</Proxy>",
        'ProxyPass "/app" "balancer://mycluster"',
    ]) + "\n")  # fmt: skip
    test = mpmd("-t", "-f", str(conf))
    assert (test.returncode, test.stdout, test.stderr) == (0, "Syntax OK\n", "")
    listed = mpmd("-M", "-f", str(conf)).stdout.splitlines()
    for module in PROXY_MODULES:
        assert f" {module}_module (shared)" in listed
