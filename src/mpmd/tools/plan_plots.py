"""`mpmctl plan --plots`: each configuration's simulated second-by-second series as charts.

One figure per configuration, three panels sharing the time axis: concurrency (busy threads,
open connections, the queue), the pool size (processes), and memory (the plan's footprint
applied to each second). Written as PNG and SVG. matplotlib is an optional extra
(`pip install 'mpmd[tools]'`); nothing else in mpmd needs it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mpmd.tools.plan import ConfigPlan


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(plans: Sequence[ConfigPlan], directory: str) -> list[str]:
    """Write `N-name.png` and `N-name.svg` per configuration into `directory` (created);
    returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    for n, plan in enumerate(plans, 1):
        series = plan.result.series
        seconds = [series.start + k for k in range(len(series.processes))]
        memory_mib = [
            plan.memory_kib(p, b) / 1024 for p, b in zip(series.processes, series.busy, strict=True)
        ]
        fig, (conc, pool, mem) = plt.subplots(3, 1, sharex=True, figsize=(9, 7.5))
        name = os.path.basename(plan.path)
        fig.suptitle(f"{name} ({plan.result.settings.mpm.name})")
        conc.plot(seconds, list(series.busy), label="busy threads")
        conc.plot(seconds, list(series.connections), label="connections")
        conc.plot(seconds, list(series.queue), label="queued")
        conc.set_ylabel("concurrency")
        conc.legend(loc="upper right")
        pool.step(seconds, list(series.processes), where="post")
        pool.set_ylabel("processes")
        mem.step(seconds, memory_mib, where="post")
        mem.set_ylabel("memory MiB")
        mem.set_xlabel("seconds into the trace")
        for ax in (conc, pool, mem):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        stem = os.path.join(directory, f"{n}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}")
        for ext in ("png", "svg"):
            fig.savefig(f"{stem}.{ext}")
            written.append(f"{stem}.{ext}")
        plt.close(fig)
    return written
