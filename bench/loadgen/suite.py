"""Every load scenario on the chosen databases, and a profile of the server under sync load."""

import io
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen.run import LoadRun
from bench.loadgen.scenarios import (
    NODES_PER_EXECUTOR,
    SYNC_INTERVAL,
    Row,
    Sizes,
    capacity,
    held_polls,
    held_polls_summary,
)
from bench.loadgen.scrape import scrape
from bench.loadgen.target import target
from bench.loadgen.worker import LoadOptions


def run_scenarios(backends: list[str], sizes: Sizes, pg_workers: list[int]) -> list[Row]:
    """P3 and P1 on one fresh server per backend (per worker count on PostgreSQL), each P4
    count on another (so no poll of an earlier step lingers in the memory it measures)."""
    rows: list[Row] = []
    for backend in backends:
        for workers in pg_workers if backend == "postgresql" else [1]:
            with target(backend, workers=workers) as t:
                rows += capacity(t, sizes)
                if workers == 1:
                    rows.append(scrape(t))  # the fleet the ramp left, its observations stored
        # Each count on a fresh server: memory a larger step measures is not hidden by what an
        # earlier step's polls left in the allocator.
        polls: list[Row] = []
        for count in sizes.held_polls:
            with target(backend) as t:
                polls += held_polls(t, sizes, count)
        rows += [*polls, held_polls_summary(backend, polls, sizes.held_polls)]
    return rows


def profile_sync_load(backend: str, executors: int, seconds: float, top: int = 30) -> str:
    """cProfile the server while `executors` x 10 nodes sync every 5 s; the top of the
    profile by own time and by cumulative time, as Markdown."""
    path = Path(tempfile.mkdtemp(prefix="nodeplane-profile-")) / "server.pstats"
    with target(backend, profile=path) as t:
        specs = t.fleet("lg", executors, NODES_PER_EXECUTOR)
        run = LoadRun(t.server.url, specs, LoadOptions(sync_interval=SYNC_INTERVAL))
        run.start()
        time.sleep(seconds)
        report = run.stop()
    # The server wrote the profile as it stopped (it covers setup too; the load dominates).
    stats = pstats.Stats(str(path))
    text = [
        "Own time by package (cProfile counts each resumption of a coroutine as a call and "
        "its waits in cumulative time, so own time is the measure to trust):\n\n"
        f"```\n{by_package(stats)}\n```"
    ]
    for order in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats(order).print_stats(top)
        text.append(f"Sorted by {order}:\n\n```\n{_shorten(buf.getvalue())}\n```")
    total = getattr(stats, "total_tt", 0.0)
    return (
        f"{backend}, {executors} executors x {NODES_PER_EXECUTOR} nodes for {seconds:.0f} s "
        f"({len(report.syncs)} syncs answered, {report.polls} polls returned, errors: "
        f"{dict(report.errors) or 'none'}); {total:.1f} s of profiled time in the server's "
        f"main thread.\n\n" + "\n\n".join(text)
    )


def _package(filename: str, function: str) -> str:
    """Which package a profiled function belongs to (C functions by name)."""
    if filename == "~":
        if "epoll" in function:
            return "(idle: waiting for I/O in epoll)"
        if "put_nowait" in function:
            return "aiosqlite hand-off to its thread (SimpleQueue.put_nowait)"
        return "C: " + re.sub(r"[<>{}]", "", function)[:50]
    if m := re.search(r"site-packages/([^/]+)", filename):
        return m.group(1).split(".")[0]
    if m := re.search(r"/nodeplane/([^/]+)(?:/([^/.]+))?", filename):
        return "nodeplane." + m.group(1) + ("." + m.group(2) if m.group(2) else "")
    if m := re.search(r"python3\.\d+/([^/]+)", filename):
        return "stdlib " + m.group(1).removesuffix(".py")
    return filename


def by_package(stats: pstats.Stats, top: int = 20) -> str:
    """Own time summed by package, as a share of the time the main thread was not idle."""
    totals: dict[str, float] = {}
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        key = _package(filename, function)
        totals[key] = totals.get(key, 0.0) + own
    idle = totals.pop("(idle: waiting for I/O in epoll)", 0.0)
    busy = sum(totals.values())
    lines = [f"busy {busy:.1f} s, idle {idle:.1f} s"]
    for key, own in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{own:7.2f} s {own / busy:6.1%}  {key}")
    return "\n".join(lines)


def _shorten(text: str) -> str:
    """pstats output without its header noise and with short paths."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("   Random")]
    out = "\n".join(lines)
    out = re.sub(r"\S*/site-packages/", "", out)
    out = re.sub(r"\S*/src/nodeplane/", "nodeplane/", out)
    return out.replace(sys.prefix, "").replace(sys.base_prefix, "")
