"""What the harness needs installed, and the record of what it ran on.

Owns: installing the Debian packages (wrk, apache2, libapache2-mod-wsgi-py3, nginx-light, haproxy) when
missing -- with a policy-rc.d in place so apt never starts their system services --, the peers'
venv bench/.venv (gunicorn, waitress, granian, httptools, uvicorn, uvloop, websockets, and mpmd itself with `pip install -e`,
so mpmd runs on the same Python as the peers), and the machine/version facts the report prints.
Never touches the project's own environment.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "bench" / ".venv"
# uvicorn runs with uvloop and httptools as its benchmarks do; websockets is its WebSocket protocol.
PEER_PACKAGES = ("gunicorn", "waitress", "granian", "httptools", "uvicorn", "uvloop", "websockets")
DEBIAN_PACKAGES = {
    "wrk": Path("/usr/bin/wrk"),
    "apache2": Path("/usr/sbin/apache2"),
    "libapache2-mod-wsgi-py3": Path("/usr/lib/apache2/modules/mod_wsgi.so"),
    "nginx-light": Path("/usr/sbin/nginx"),
    "haproxy": Path("/usr/sbin/haproxy"),
    "apache2-utils": Path("/usr/bin/ab"),  # workload h's client
}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def ensure_debian_packages(log=print) -> None:
    """apt-get install what is missing; services are kept from starting by policy-rc.d (101)."""
    missing = [name for name, path in DEBIAN_PACKAGES.items() if not path.exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise SystemExit(f"missing Debian packages {missing}: install them (apt-get) as root")
    log(f"installing Debian packages: {' '.join(missing)}")
    added_policy = not POLICY_RC_D.exists()
    if added_policy:
        POLICY_RC_D.write_text(
            "#!/bin/sh\n# mpmd bench: never start services on install\nexit 101\n"
        )
        POLICY_RC_D.chmod(0o755)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
            check=True,
            env=env,
            timeout=1200,
        )
    finally:
        if added_policy:
            POLICY_RC_D.unlink(missing_ok=True)


def venv_bin() -> Path:
    return VENV / "bin"


def ensure_venv(log=print) -> Path:
    """Create bench/.venv with the peers and mpmd (editable) unless it already has them."""
    vbin = venv_bin()
    python = vbin / "python"
    if not python.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    wanted = [*PEER_PACKAGES, "mpmd"]
    if any(_package_version(python, name) is None for name in wanted):
        log(f"installing {' '.join(PEER_PACKAGES)} and mpmd into {VENV}")
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *PEER_PACKAGES], check=True, timeout=900)
        subprocess.run([*pip, "-e", str(REPO)], check=True, timeout=900)
    return vbin


def _package_version(python: Path, name: str) -> str | None:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def _output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def _debian_version(package: str) -> str:
    return _output(["dpkg-query", "-W", "-f", "${Version}", package]) or "not installed"


def versions(vbin: Path) -> dict[str, str]:
    """Versions of everything measured, as the report prints them."""
    python = vbin / "python"
    found: dict[str, str] = {
        "python (venv: peers and mpmd)": _output(
            [str(python), "-c", "import sys; print(sys.version.split()[0])"]
        ),
    }
    for name in (*PEER_PACKAGES, "mpmd"):
        found[name] = _package_version(python, name) or "not installed"
    apache = re.search(r"Apache/\S+ \(\w+\)", _output(["apache2", "-v"]))
    found["apache"] = f"{apache.group(0) if apache else '?'} (apache2 {_debian_version('apache2')})"
    found["mod_wsgi"] = f"libapache2-mod-wsgi-py3 {_debian_version('libapache2-mod-wsgi-py3')}"
    nginx = re.search(r"nginx/\S+", _output(["nginx", "-v"]))
    found["nginx"] = (
        f"{nginx.group(0) if nginx else '?'} (nginx-light {_debian_version('nginx-light')})"
    )
    haproxy = re.search(r"HAProxy version \S+", _output(["haproxy", "-v"]))
    found["haproxy"] = (
        f"{haproxy.group(0) if haproxy else '?'} (haproxy {_debian_version('haproxy')})"
    )
    found["wrk"] = f"wrk {_debian_version('wrk')}"
    found["ab"] = f"ab (apache2-utils {_debian_version('apache2-utils')})"
    found["openssl"] = _output(["openssl", "version"]) or "?"
    return found


def machine() -> dict[str, str]:
    """CPU model, core count, memory, kernel and OS of this machine."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    os_name = platform.system()
    try:
        os_name = platform.freedesktop_os_release().get("PRETTY_NAME", os_name)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_gib:.0f} GiB",
        "kernel": platform.release(),
        "os": os_name,
        "harness python": platform.python_version(),
    }
