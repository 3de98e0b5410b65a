"""The advice printed: an Apache configuration snippet whose comments carry the arithmetic.

The whole text is configuration: every line that is not a directive is a `#` comment, so the
output can be saved and included as it is (`mpmctl advise > mpm_advice.conf`). The pool sits
inside `<IfModule mpm_X_module>` as Debian's mods-available/mpm_*.conf files do, and mpmd's
own MaxMemoryPerChild inside `<IfDirective MaxMemoryPerChild>`, so `apache2 -t` accepts the
same file. JSON carries the same numbers for other tools. No arithmetic here (advise_core.py).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap

from mpmd.tools.advise_core import Advice, Inputs

_WIDTH = 96
_MODULE_FILE = {"prefork": "mpm_prefork", "worker": "mpm_worker", "event": "mpm_event"}


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=f"{indent}# ",
        subsequent_indent=f"{indent}#   ",
        break_on_hyphens=False,
    )


def render_text(advice: Advice, source: str) -> str:
    """The advice as a configuration file (comments, then the `<IfModule>` block), or, when
    nothing is safe, only comments saying why."""
    lines = _comment(f"mpmctl advise for {source}")
    if not advice.fits:
        lines += _comment(f"Memory budget: {advice.budget_why}")
        lines += _comment(f"One child: {advice.child_why}")
        lines += [line for note in advice.notes for line in _comment(f"NOT SAFE: {note}")]
        return "\n".join(lines) + "\n"
    mod = _MODULE_FILE[advice.mpm]
    lines += _comment(f"Recommended MPM: {advice.mpm}, because {advice.why_mpm}.")
    lines += _comment(
        f"To use it: Debian `a2dismod mpm_prefork mpm_worker mpm_event; a2enmod {mod}`, or "
        f"`LoadModule {mod}_module modules/mod_{mod}.so`."
    )
    lines += _comment(f"Memory budget: {advice.budget_why}.")
    lines += _comment(f"One child: {advice.child_why}.")
    lines += _comment(f"Concurrency: {advice.concurrency_why}.")
    for note in advice.notes:
        lines += _comment(f"Note: {note}.")
    if advice.check is not None:
        lines += _comment(f"Planner check: {check_text(advice.check)}.")
    for step in advice.adjustments:
        lines += _comment(f"Adjusted: {step}.")
    lines.append(f"<IfModule {mod}_module>")
    width = max(len(s.name) for s in advice.settings) + 1
    for s in advice.settings:
        lines += _comment(s.why, "    ")
        line = f"    {s.name.ljust(width)} {s.text}"
        if s.name == "MaxMemoryPerChild":  # mpmd's: Apache skips the block
            line = f"    <IfDirective MaxMemoryPerChild>\n    {line}\n    </IfDirective>"
        lines.append(line)
    lines.append("</IfModule>")
    return "\n".join(lines) + "\n"


def check_text(check: dict[str, object]) -> str:
    if check.get("skipped"):
        return str(check["skipped"])
    return (
        f"{check['requests']} requests of {check['trace']} replayed: p50 {check['p50_ms']} ms, "
        f"p95 {check['p95_ms']} ms, p99 {check['p99_ms']} ms, {check['waited']} waited for a "
        f"worker, {check['refused']} refused, peak {check['peak_processes']} processes, peak "
        f"memory {check['peak_memory_kib']} KiB of a {check['budget_kib']} KiB budget"
    )


def as_dict(advice: Advice, inputs: Inputs) -> dict[str, object]:
    """The advice for other tools: the directives by name, the inputs, the planner's check."""
    return {
        "fits": advice.fits,
        "mpm": advice.mpm if advice.fits else None,
        "why_mpm": advice.why_mpm,
        "directives": advice.directives(),
        "why": {s.name: s.why for s in advice.settings},
        "budget_kib": advice.budget_kib,
        "budget_why": advice.budget_why,
        "child_kib": advice.child_kib,
        "child_why": advice.child_why,
        "concurrency_why": advice.concurrency_why,
        "inputs": dataclasses.asdict(inputs),
        "planner": advice.check,
        "adjustments": advice.adjustments,
        "notes": advice.notes,
    }


def render_json(advice: Advice, inputs: Inputs) -> str:
    return json.dumps(as_dict(advice, inputs), indent=2)
