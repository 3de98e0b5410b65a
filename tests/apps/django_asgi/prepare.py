"""What a test runs once before it starts a server on this project: `migrate` into its data dir.

It runs Django's own command in a subprocess, so the test process never configures Django
settings itself (they are process-wide and other tests may not want them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APPS = Path(__file__).resolve().parents[1]  # tests/apps: the folder that holds django_asgi


def environment(data_dir: Path) -> dict[str, str]:
    """The variables a server (or a command) needs to run this project on `data_dir`."""
    return {"MPMD_DJANGO_DATA": str(data_dir), "DJANGO_SETTINGS_MODULE": "django_asgi.settings"}


def migrate(data_dir: Path) -> None:
    """Create db.sqlite3 in `data_dir` with every installed app's tables."""
    path = os.pathsep.join(filter(None, [str(APPS), os.environ.get("PYTHONPATH", "")]))
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        env={**os.environ, **environment(data_dir), "PYTHONPATH": path},
        check=True,
        timeout=120,
    )
