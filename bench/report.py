"""docs/benchmarks.md from a results JSON: tables, targets, machine, versions, command.

Owns the rendering, which is pure (dict in, markdown out) so it is unit-tested on literal data.
The hand-written closing note between NOTES markers survives regeneration. Run as
`python -m bench.report bench/results/FILE.json` to re-render without measuring.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

NOISY_SPREAD = 0.15
CLIENT_BOUND_PERCENT = 95.0
NOTES_BEGIN, NOTES_END = "<!-- NOTES:BEGIN -->", "<!-- NOTES:END -->"
DEFAULT_NOTES = "The closing note on the full run (figures, missed targets, profiling) goes here."
MPMD_MPMS = ("mpmd-prefork", "mpmd-worker", "mpmd-event")


@dataclass(frozen=True)
class Target:
    """mpmd `server` on `workload` must reach `goal` x the `reference` server's `metric` (at
    most `goal` x for a latency, where lower is better)."""

    workload: str
    server: str
    reference: str
    reference_workload: str
    metric: str  # "rps", "mib" or "p99" (milliseconds, at most)
    goal: float
    source: str


# Issue 10's table where it sets one, issue 6's (and 3's) elsewhere.
TARGETS: tuple[Target, ...] = (
    Target("a", "mpmd-X", "waitress", "a", "rps", 1.0, "issue 3"),
    Target("a", "mpmd-prefork", "waitress", "a", "rps", 1.3, "issue 10"),
    Target("a", "mpmd-worker", "waitress", "a", "rps", 2.2, "issue 10"),
    Target("a", "mpmd-event", "waitress", "a", "rps", 2.5, "issue 10"),
    *(Target("b", s, "gunicorn-sync", "b", "rps", 2.0, "issue 10") for s in MPMD_MPMS),
    *(Target("b", s, "gunicorn-sync", "b", "p99", 3.0, "issue 10") for s in MPMD_MPMS),
    Target("c", "mpmd-prefork", "apache-prefork-static", "c", "rps", 0.5, "issue 10"),
    Target("c", "mpmd-worker", "apache-event-static", "c", "rps", 1.0, "issue 6"),
    Target("c", "mpmd-event", "apache-event-static", "c", "rps", 0.75, "issue 10"),
    *(Target("d", s, "nginx-static", "d", "mib", 0.95, "issue 6") for s in MPMD_MPMS),
    Target("e", "mpmd-event", "mpmd-event", "a", "rps", 0.8, "issues 6, 9"),
    Target("f", "mpmd-balancer-event", "apache-balancer", "f", "rps", 1.0, "issue 11"),
    # TLS (issue 13): keep-alive over TLS against the same MPM's plain hello (a), handshakes
    # against Apache event + mod_ssl.
    *(Target("g", f"{s}-tls", s, "a", "rps", 0.8, "issue 13") for s in MPMD_MPMS),
    *(Target("h", f"{s}-tls", "apache-event-tls", "h", "rps", 1.0, "issue 13") for s in MPMD_MPMS),
    # ASGI (issue 15): one event child against uvicorn (uvloop + httptools) on the same core.
    Target("asgi-hello", "mpmd-event-asgi", "uvicorn", "asgi-hello", "rps", 1.0, "issue 15"),
    Target("ws-echo", "mpmd-event-asgi", "uvicorn", "ws-echo", "rps", 1.0, "issue 15"),
)
WS_IDLE_WORKLOADS = ("ws-idle", "ws-idle-deflate")  # issue 15's Scale: their own table
WS_IDLE_GOALS = "under 20 KiB per WebSocket, hello >= 0.8x its own figure without them"
MESSAGE_WORKLOADS = ("ws-echo",)  # their rate is WebSocket messages/s, not requests/s
BALANCER_WORKLOAD = "f"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def spread(rates: list[float]) -> float:
    """(max - min) / median of the runs' req/s; 0 for fewer than two runs."""
    if len(rates) < 2:
        return 0.0
    middle = statistics.median(rates)
    return (max(rates) - min(rates)) / middle if middle else 0.0


def _median_run(runs: list[dict]) -> dict | None:
    ordered = sorted(runs, key=lambda r: r["requests_per_sec"])
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def cell_notes(result: dict) -> str:
    """The notes column: failures, noise, wrk errors, core load, client-bound."""
    if result.get("error"):
        return f"**{result['error']}**"
    notes: list[str] = []
    runs = result.get("runs", [])
    if spread([r["requests_per_sec"] for r in runs]) > NOISY_SPREAD:
        notes.append(f"noisy: spread {spread([r['requests_per_sec'] for r in runs]):.0%}")
    killed = sum(1 for r in runs if r.get("killed"))
    if killed:
        notes.append(f"wrk killed at -d+2 s in {killed} run(s), counted as 0")
    middle = _median_run(runs)
    if middle is not None:
        for kind, count in middle.get("socket_errors", {}).items():
            if count:
                notes.append(f"wrk {kind} {count}")
        if middle.get("non_2xx"):
            notes.append(f"non-2xx {middle['non_2xx']}")
    idle = result.get("idle")
    if "idle_cmd" in result:
        if idle is None:
            notes.append("idle client gave no report")
        else:
            for key, text in (
                ("never_answered", "never answered"),
                ("connect_failed", "connects failed"),
                ("closed_by_server", "closed by server"),
            ):
                if idle.get(key):
                    notes.append(f"{idle[key]} {text}")
    if result.get("server_died"):
        notes.append("**server process died** during the test")
    if result.get("cpu0") is not None:
        notes.append(f"cpu0/cpu1 {result['cpu0']:.0f}/{result['cpu1']:.0f}%")
        if result["cpu0"] >= CLIENT_BOUND_PERCENT:
            notes.append("**client-bound** (wrk core saturated)")
    return "; ".join(notes)


def _row(cells: list[str]) -> str:
    """One markdown table row; a '|' inside a cell would split it."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _runs_text(result: dict) -> str:
    runs = result.get("runs", [])
    return " / ".join(_num(r["requests_per_sec"]) for r in runs) or "-"


def load_table(results: list[dict], with_mib: bool, unit: str = "req/s") -> list[str]:
    head = f"| server | {unit} (median of runs) | runs | p99 ms |"
    rule = "|---|---:|---|---:|"
    if with_mib:
        head, rule = head + " MiB/s |", rule + "---:|"
    lines = [head + " PSS MiB after | notes |", rule + "---:|---|"]
    for r in results:
        cells = [
            r["server"],
            _num(r.get("median_rps")),
            _runs_text(r),
            _num(r.get("median_p99_ms"), 2),
        ]
        if with_mib:
            cells.append(_num(r.get("median_mib_s")))
        cells += [_num(r.get("pss_mib"), 1), cell_notes(r)]
        lines.append(_row(cells))
    return lines


def idle_table(results: list[dict], idle_conns: int) -> list[str]:
    lines = [
        f"| server | req/s (-c 20) | p99 ms | idle conns answered / still open (of {idle_conns}) "
        "| PSS MiB (idle held) | PSS MiB before | procs/threads | notes |",
        "|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in results:
        idle = r.get("idle") or {}
        held = f"{idle.get('answered', '-')} / {idle.get('still_open', '-')}" if idle else "-"
        procs = f"{r.get('procs', '-')}/{r.get('threads', '-')}" if r.get("procs") else "-"
        cells = [
            r["server"],
            _num(r.get("median_rps")),
            _num(r.get("median_p99_ms"), 2),
            held,
            _num(r.get("pss_mib"), 1),
            _num(r.get("pss_mib_before"), 1),
            procs,
            cell_notes(r),
        ]
        lines.append(_row(cells))
    return lines


def _yes_no(met: bool | None) -> str:
    return "yes" if met else "**no**"


def ws_idle_table(results: list[dict]) -> list[str]:
    """Workload ws-idle: idle WebSockets held, their cost in PSS, and hello with and without."""
    lines = [
        "| server | WebSockets open / failed / closed by server | PSS MiB before / with "
        "| KiB per WebSocket | hello req/s without / with | ratio | ratio by server CPU/req "
        "| < 20 KiB | >= 0.8x | notes |",
        "|---|---|---|---:|---|---:|---:|---|---|---|",
    ]
    for r in results:
        if r.get("error"):
            lines.append(_row([r["server"], *["-"] * 8, cell_notes(r)]))
            continue
        ready, report = r.get("ws_ready") or {}, r.get("ws_idle") or {}
        failed = sum(ready.get(k, 0) for k in ("connect_failed", "refused", "never_answered"))
        held = f"{ready.get('still_open', '-')} / {failed} / {report.get('closed_by_server', '-')}"
        cpu = (
            f"{r['cpu_hello_ratio']:.2f}x ({_num(r.get('cpu_us_per_req_before'), 1)} / "
            f"{_num(r.get('cpu_us_per_req'), 1)} us)"
            if r.get("cpu_hello_ratio")
            else "-"
        )
        notes = cell_notes(r)
        if ready.get("deflate"):
            notes = f"deflate accepted on {ready['deflate']}; {notes}"
        cells = [
            r["server"],
            held,
            f"{_num(r.get('pss_mib_before'), 1)} / {_num(r.get('pss_mib'), 1)}",
            _num(r.get("kib_per_conn"), 1),
            f"{_num(r.get('median_rps_before'))} / {_num(r.get('median_rps'))}",
            f"{r['hello_ratio']:.2f}x" if r.get("hello_ratio") is not None else "-",
            cpu,
            _yes_no(r.get("memory_met")),
            _yes_no(r.get("hello_met")),
            notes,
        ]
        lines.append(_row(cells))
    return lines


def _value(index: dict[tuple[str, str], dict], server: str, workload: str, metric: str):
    result = index.get((server, workload))
    if result is None or result.get("error"):
        return None
    key = {"mib": "median_mib_s", "p99": "median_p99_ms"}.get(metric, "median_rps")
    return result.get(key)


def target_rows(data: dict) -> list[dict]:
    """One row per target whose servers were both in the run; ratio None if either failed."""
    index = {(r["server"], r["workload"]): r for r in data["results"]}
    idle_conns = data.get("settings", {}).get("idle_conns", 2000)
    rows = []
    for t in TARGETS:
        if (t.server, t.workload) not in index or (t.reference, t.reference_workload) not in index:
            continue
        mine = _value(index, t.server, t.workload, t.metric)
        theirs = _value(index, t.reference, t.reference_workload, t.metric)
        ratio = mine / theirs if mine is not None and theirs else None
        met = ratio is not None and (ratio <= t.goal if t.metric == "p99" else ratio >= t.goal)
        extra = ""
        if t.workload == "e":
            # Every idle connection must have been answered: with the defaults a full event
            # child closes its oldest idle keep-alive connections to take new clients (issue 9
            # item 10), so how many stay open is reported, not required.
            idle = index[(t.server, t.workload)].get("idle") or {}
            answered, still_open = idle.get("answered"), idle.get("still_open")
            met = met and answered == idle_conns
            extra = (
                f"; idle answered {answered if answered is not None else '-'} of {idle_conns}, "
                f"{still_open if still_open is not None else '-'} still open"
            )
        rows.append(
            {
                "target": t,
                "mine": mine,
                "theirs": theirs,
                "ratio": ratio,
                "met": met,
                "extra": extra,
            }
        )
    return rows


def targets_table(data: dict) -> list[str]:
    rows = target_rows(data)
    if not rows:
        return ["No target applies: the run had no mpmd server together with its reference peer."]
    lines = [
        "| target | mpmd | vs | ratio | goal | met | source |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        t: Target = row["target"]
        rate = "msg/s" if t.workload in MESSAGE_WORKLOADS else "req/s"
        unit = {"mib": "MiB/s", "p99": "p99 ms"}.get(t.metric, rate)
        ref = t.reference if t.reference != t.server else f"its own {t.reference_workload}"
        if t.reference != t.server and t.reference_workload != t.workload:
            ref += f" {t.reference_workload}"
        label = f"{t.server} {t.workload} vs {ref} ({unit})"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        met = "yes" if row["met"] else ("**no**" if row["ratio"] is not None else "n/a (failed)")
        digits = 1 if t.metric == "p99" else 0
        bound = "<=" if t.metric == "p99" else ">="
        lines.append(
            f"| {label} | {_num(row['mine'], digits)} | {_num(row['theirs'], digits)} | {ratio} "
            f"| {bound} {t.goal:g}x{row['extra']} | {met} | {t.source} |"
        )
    return lines


def is_measurement_of_record(data: dict) -> bool:
    """Full method (>= 3 runs of >= 8 s), every workload, nothing interrupted."""
    s = data.get("settings", {})
    return (
        s.get("duration", 0) >= 8
        and s.get("runs", 0) >= 3
        and set(data.get("workloads", [])) >= {"a", "b", "c", "d", "e"}
        and not data.get("interrupted")
    )


def render(data: dict, notes: str = DEFAULT_NOTES, results_name: str = "") -> str:
    """The whole docs/benchmarks.md."""
    s = data["settings"]
    out = ["# Benchmarks", ""]
    if not is_measurement_of_record(data):
        out += [
            f"> **Harness smoke test, not the measurement of record.** Run of {data['date']} with "
            f"{s['runs']} run(s) of {s['duration']:g} s on a shared machine; the numbers only show "
            "that the harness works. The full run is pending.",
            "",
        ]
    out += [
        "Generated by `python -m bench.run` (see bench/README.md)"
        + (f" from `bench/results/{results_name}`" if results_name else "")
        + ". Method as in the peer reference: server pinned `taskset -c 1`, `wrk -t1 --latency` "
        f"pinned `taskset -c 0`; per workload a warm-up ({s['first_warmup']:g} s before a server's "
        f"first workload, {s['warmup']:g} s otherwise), then {s['runs']} run(s) of "
        f"{s['duration']:g} s; median req/s, median p99, cpu0/cpu1 busy % of the median run "
        f"(**client-bound** = cpu0 >= {CLIENT_BOUND_PERCENT:g} %); PSS summed over the server's "
        "process tree after the last run. Keep-alive timeout 30 s and unlimited requests per "
        "connection everywhere; no access logs. Workload e runs on a fresh server instance. "
        "Workload f measures balancers: the balancer pinned `taskset -c 1`, three nginx back "
        "ends and wrk pinned `taskset -c 0`; Apache and mpmd run the same generated httpd.conf "
        "(configs below). Workloads g and h run over TLS against the `-tls` servers, which serve "
        "https only with one self-signed ECDSA P-256 certificate made per run; h's client is "
        "`ab` (pinned like wrk), which makes every connection a full TLS 1.3 handshake (wrk "
        "would resume the session from the second connection on). Workloads asgi-hello and "
        "ws-echo run only the ASGI servers, each one process on cpu 1 serving bench/asgi_hello.py; "
        "ws-echo's client is bench/ws_client.py pinned like wrk, one message in flight on each "
        "connection, its rate in messages/s and its p99 per round trip.",
        "",
        "## Targets",
        "",
        *targets_table(data),
        "",
        "## Results",
        "",
    ]
    by_workload: dict[str, list[dict]] = {}
    for r in data["results"]:
        by_workload.setdefault(r["workload"], []).append(r)
    order = list(data["workload_titles"])  # the registry's order: a-h, then the ASGI ones
    for key in sorted(by_workload, key=lambda k: order.index(k) if k in order else len(order)):
        out += workload_section(data, key, by_workload[key])
    out += ["### Servers as measured", "", "| server | what | command |", "|---|---|---|"]
    for name, server in data["servers"].items():
        out.append(f"| {name} | {server['what']} | `{' '.join(server['cmd'])}` |")
    out += ["", "Generated configs and every wrk command line are in the results JSON.", ""]
    out += balancer_configs(data)
    out += ["## Machine", ""] + [f"- {k}: {v}" for k, v in data["machine"].items()]
    out += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in data["versions"].items()]
    out += [
        "",
        "## Run",
        "",
        f"- date: {data['date']} (finished {data.get('finished', '-')})",
        f"- command: `{data['command']}`",
        f"- settings: {json.dumps(s)}",
        "",
        "## Closing note",
        "",
        NOTES_BEGIN,
        notes.strip(),
        NOTES_END,
        "",
    ]
    return "\n".join(out)


def workload_section(data: dict, key: str, results: list[dict]) -> list[str]:
    """One workload's heading and table (also printed alone by `--only`)."""
    out = [f"### {key}. {data['workload_titles'][key]}", ""]
    if key == "e":
        out += idle_table(results, data["settings"].get("idle_conns", 2000))
    elif key in WS_IDLE_WORKLOADS:
        conns = data["settings"].get("ws_idle_conns", 10000)
        out += [f"Targets (issue 15, Scale, {conns} WebSockets): {WS_IDLE_GOALS}.", ""]
        out += ws_idle_table(results)
    else:
        unit = "msg/s" if key in MESSAGE_WORKLOADS else "req/s"
        out += load_table(results, with_mib=key == "d", unit=unit)
    return [*out, ""]


def balancer_configs(data: dict) -> list[str]:
    """The exact configs of workload f: its back ends and every balancer in the run."""
    names = [r["server"] for r in data["results"] if r["workload"] == BALANCER_WORKLOAD]
    backends = data.get("backends")
    if not names or backends is None:
        return []
    out = [f"### Balancer configurations (workload {BALANCER_WORKLOAD})", ""]
    out += [f"Back ends: {backends['what']}; `{' '.join(backends['cmd'])}`", ""]
    out += ["```nginx", backends["config"].rstrip(), "```", ""]
    for name in dict.fromkeys(names):
        config = data["servers"].get(name, {}).get("config")
        if config:
            fence = "nginx" if "worker_processes" in config else "apache"
            out += [f"{name}:", "", f"```{fence}", config.rstrip(), "```", ""]
    return out


def existing_notes(path: Path) -> str:
    """The hand-written note of an existing docs file, or the default text."""
    try:
        text = path.read_text()
    except OSError:
        return DEFAULT_NOTES
    m = re.search(re.escape(NOTES_BEGIN) + r"\n(.*?)\n?" + re.escape(NOTES_END), text, re.S)
    return m.group(1) if m else DEFAULT_NOTES


def write_docs(data: dict, docs: Path, results_name: str) -> None:
    docs.write_text(render(data, existing_notes(docs), results_name))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-render docs/benchmarks.md from a results JSON")
    parser.add_argument("results", type=Path)
    parser.add_argument(
        "--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
    )
    parser.add_argument(
        "--only", help="print these workloads' sections (comma-separated) instead of the docs"
    )
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text())
    if args.only:
        for key in args.only.split(","):
            results = [r for r in data["results"] if r["workload"] == key]
            if results:
                print("\n".join(workload_section(data, key, results)))
        return
    write_docs(data, args.docs, args.results.name)
    print(f"wrote {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
