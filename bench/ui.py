"""The UI goals of issue 8: the nodes page with 1,000 nodes, and live updates for 50 open pages.

A server on a fresh database gets 100 executors x 10 nodes (provisioned straight into the
database, then one sync each through the real protocol so every row has an observed phase and
height). Then, with nothing else loading the server:

- page: GET /nodes with the admin's session cookie over one kept connection, timed;
- live updates: 50 simulated open pages, each doing every 2 s exactly what app.js's nodes page
  does (its poll query, read from app.js itself, over /graphql with the cookie; and when the
  nodes returned are not the rows shown, a GET of the whole page), while the server's CPU time
  is read from /proc. The ratio of CPU seconds to wall seconds is steady on a busy machine, where
  latency is not.
"""

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.scenarios import Row
from bench.loadgen.simulated import SimulatedExecutor
from bench.loadgen.stats import WorkerReport, percentile
from bench.loadgen.target import Target, target
from bench.report import machine_facts
from nodeplane.controlplane.api.context import SESSION_COOKIE
from nodeplane.protocol import NodeObservation, ObservedNodeState, ObservedProcess, ProcessStatus

APP_JS = Path(__file__).resolve().parent.parent / "src/nodeplane/controlplane/web/static/app.js"
EXECUTORS = 100
NODES_PER_EXECUTOR = 10
PAGE_GOAL = 0.200
CPU_GOAL = 0.05
PAGES = 50
# Syncs in flight while the fleet reports its first observations.
SYNC_CONCURRENCY = 20
# Time allowed for opening each page (two at a time) before the pages start polling.
OPEN_SECONDS_PER_PAGE = 0.3
ROW_ID = re.compile(rb'<tr data-node-id="([0-9a-f-]{36})"')


@dataclass(frozen=True)
class UiSizes:
    """How many page loads are timed and how long the open pages are watched."""

    page_requests: int
    window: float
    idle: float


QUICK = UiSizes(page_requests=20, window=10.0, idle=3.0)
FULL = UiSizes(page_requests=50, window=60.0, idle=10.0)


@dataclass(frozen=True)
class PollScript:
    """What the nodes page of app.js does every POLL_MS: its query, the most rows it compares
    with the query's answer (a longer page is fetched whole instead), and its period."""

    query: str
    first: int
    period: float


def poll_script(source: str | None = None) -> PollScript:
    """The nodes page's poll as app.js has it, so the benchmark follows the script it measures."""
    js = source if source is not None else APP_JS.read_text()
    period = re.search(r"const POLL_MS = (\d+);", js)
    fields = re.search(r"const NODE_FIELDS = `([^`]*)`;", js)
    first = re.search(r"const POLL_FIRST = (\d+);", js)
    body = js[js.index("function initNodesPage") :]
    query = re.search(r"gql\(`(query\(\$f: NodeFilter\)[^`]*)`", body)
    if not (period and fields and first and query):
        raise RuntimeError("app.js no longer has the nodes page poll this benchmark expects")
    return PollScript(
        query=query.group(1)
        .replace("${NODE_FIELDS}", " ".join(fields.group(1).split()))
        .replace("${POLL_FIRST}", first.group(1)),
        first=int(first.group(1)),
        period=int(period.group(1)) / 1000,
    )


class _RichExecutor(SimulatedExecutor):
    """A simulated executor whose observations carry the metrics a real one probes, so the
    page renders what it would for a synced fleet (heights, peers, disk)."""

    def _observation(self, node_id: str) -> dict[str, object]:
        height = random.randint(2_000_000, 3_000_000)
        return NodeObservation(
            node_id=uuid.UUID(node_id),
            observed=ObservedNodeState(
                revision=self.known[node_id],
                processes=[
                    ObservedProcess(
                        role="node",
                        status=ProcessStatus.RUNNING,
                        height=height,
                        network_height=height + random.randint(0, 5),
                        peers=random.randint(4, 12),
                        sync_progress=0.9999,
                        disk_total_bytes=500 * 2**30,
                        disk_available_bytes=random.randint(100, 400) * 2**30,
                        cpu_seconds=random.uniform(100, 10_000),
                        memory_bytes=random.randint(200, 900) * 2**20,
                        pid=random.randint(1000, 60000),
                    )
                ],
            ),
        ).to_wire()


async def _observe_once(url: str, specs: list[SimulatedExecutorSpec]) -> WorkerReport:
    report = WorkerReport()
    gate = asyncio.Semaphore(SYNC_CONCURRENCY)
    async with httpx.AsyncClient(base_url=url) as http:

        async def one(spec: SimulatedExecutorSpec) -> None:
            ex = _RichExecutor(
                spec, http, report, sync_interval=None, poll_wait=0, request_timeout=30
            )
            ex.assume_known(1)
            async with gate:
                await ex.sync_once()

        await asyncio.gather(*(one(s) for s in specs))
    return report


def populate(t: Target) -> int:
    """100 executors x 10 nodes, each observed once; the number of nodes."""
    specs = t.fleet("ui", EXECUTORS, NODES_PER_EXECUTOR)
    report = asyncio.run(_observe_once(t.server.url, specs))
    if report.errors or len(report.reported) != EXECUTORS * NODES_PER_EXECUTOR:
        raise RuntimeError(f"the fleet's first sync failed: {dict(report.errors)}")
    return len(report.reported)


def browser_headers(t: Target) -> dict[str, str]:
    """What a browser's same-origin fetch sends (the CSRF check reads Sec-Fetch-Site)."""
    return {"sec-fetch-site": "same-origin", "origin": t.server.url}


@dataclass(frozen=True)
class PageLoads:
    """GET /nodes, timed: seconds per request, the server's CPU seconds per request, and the
    rows and bytes of the last page."""

    seconds: list[float]
    cpu_per_request: float
    rows: int
    size: int


def page_latency(t: Target, requests: int) -> PageLoads:
    """`requests` loads of GET /nodes, one after another over one kept connection."""
    samples: list[float] = []
    rows = size = 0
    cpu0 = 0.0
    with httpx.Client(base_url=t.server.url, cookies={SESSION_COOKIE: t.token}, timeout=30) as http:
        for i in range(requests + 3):
            if i == 3:
                cpu0 = t.cpu_seconds()
            started = time.perf_counter()
            response = http.get("/nodes")
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 3:  # the first loads warm caches and the pool
                samples.append(elapsed)
            rows, size = len(ROW_ID.findall(response.content)), len(response.content)
    return PageLoads(samples, (t.cpu_seconds() - cpu0) / requests, rows, size)


@dataclass
class PageStats:
    """What the simulated open pages did."""

    polls: int = 0
    page_fetches: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    poll_seconds: list[float] = field(default_factory=list)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _open_page(
    url: str,
    token: str,
    headers: dict[str, str],
    script: PollScript,
    stats: PageStats,
    opening: asyncio.Semaphore,
    first_at: float,
    until: float,
) -> None:
    async with httpx.AsyncClient(
        base_url=url, cookies={SESSION_COOKIE: token}, headers=headers, timeout=30
    ) as http:
        async with opening:
            page = await http.get("/nodes")
            page.raise_for_status()
        shown = ROW_ID.findall(page.content)
        node_filter = json.loads(
            re.search(rb'id="nodes-filter">([^<]*)</script>', page.content).group(1)  # type: ignore[union-attr]
        )

        async def take_page() -> list[bytes]:
            fresh = await http.get("/nodes")
            fresh.raise_for_status()
            stats.page_fetches += 1
            return ROW_ID.findall(fresh.content)

        await asyncio.sleep(max(0.0, first_at - time.monotonic()))
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                if len(shown) > script.first:
                    # app.js: a page longer than one answer of the poll is taken whole.
                    shown = await take_page()
                else:
                    response = await http.post(
                        "/graphql", json={"query": script.query, "variables": {"f": node_filter}}
                    )
                    body = response.json()
                    if body.get("errors") or response.status_code != 200:
                        raise httpx.HTTPError(f"poll http {response.status_code}")
                    ids = {i["id"].encode() for i in body["data"]["nodes"]["items"]}
                    if len(ids) != len(shown) or not ids.issuperset(shown):
                        # app.js: a node appeared or went away: the server's rendering.
                        shown = await take_page()
                stats.polls += 1
                stats.poll_seconds.append(time.monotonic() - started)
            except httpx.HTTPError as exc:
                stats.error(str(exc) if str(exc).startswith("poll") else type(exc).__name__)
            # app.js sets its next timer when a refresh has finished.
            await asyncio.sleep(script.period)


def open_pages(t: Target, pages: int, window: float) -> tuple[PageStats, float, float]:
    """`pages` open nodes pages for `window` s; what they did in the window, the server's CPU
    seconds over it and its wall seconds (the pages start spread over one period first)."""
    script = poll_script()
    stats = PageStats()
    headers = browser_headers(t)

    async def run() -> tuple[PageStats, float, float]:
        # The pages are opened (a full page load each) a few at a time, before the window: their
        # first loads are not the steady cost being measured.
        opening = asyncio.Semaphore(2)
        began = time.monotonic()
        lead = OPEN_SECONDS_PER_PAGE * pages
        # Pages opened at different moments poll at different phases of the period.
        starts = [began + lead + random.uniform(0, script.period) for _ in range(pages)]
        until = began + lead + script.period + window
        tasks = [
            asyncio.create_task(
                _open_page(t.server.url, t.token, headers, script, stats, opening, at, until)
            )
            for at in starts
        ]
        # One period after the last page's first poll every page is in its steady cycle.
        await asyncio.sleep(max(0.0, began + lead + script.period - time.monotonic()))
        cpu0, wall0 = t.cpu_seconds(), time.monotonic()
        polls0, fetches0 = stats.polls, stats.page_fetches
        await asyncio.sleep(window)
        cpu, wall = t.cpu_seconds() - cpu0, time.monotonic() - wall0
        in_window = PageStats(
            stats.polls - polls0, stats.page_fetches - fetches0, stats.errors, stats.poll_seconds
        )
        await asyncio.gather(*tasks)
        return in_window, cpu, wall

    return asyncio.run(run())


def idle_cpu(t: Target, seconds: float) -> float:
    """The server's CPU share with nothing asking it anything (its sweeps)."""
    cpu0, wall0 = t.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (t.cpu_seconds() - cpu0) / (time.monotonic() - wall0)


def measure(t: Target, sizes: UiSizes, log: Callable[[str], None] = print) -> list[Row]:
    """Both UI goals on a populated target; the rows."""
    nodes = populate(t)
    loads = page_latency(t, sizes.page_requests)
    p50, p99 = percentile(loads.seconds, 50), percentile(loads.seconds, 99)
    cpu_ms = loads.cpu_per_request * 1000
    log(
        f"{t.label}: GET /nodes p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms, "
        f"{cpu_ms:.0f} CPU ms each, {loads.rows} rows"
    )
    out = [
        Row(
            "UI page",
            t.label,
            f"GET /nodes, {nodes} nodes ({loads.rows} rows, {loads.size / 1024:.0f} KB), kept "
            f"connection, {len(loads.seconds)} requests",
            "p99 < 200 ms",
            f"p50 {p50 * 1000:.0f} ms / p99 {p99 * 1000:.0f} ms (server CPU {cpu_ms:.0f} ms "
            "per page)",
            p99 < PAGE_GOAL and loads.rows == nodes,
        )
    ]
    idle = idle_cpu(t, sizes.idle)
    stats, cpu, wall = open_pages(t, PAGES, sizes.window)
    share = cpu / wall
    refreshes = stats.polls
    per_refresh = cpu / refreshes * 1000 if refreshes else float("nan")
    log(
        f"{t.label}: {PAGES} pages {share:.1%} of a core over {wall:.0f} s, idle {idle:.1%}; "
        f"{refreshes} refreshes, {stats.page_fetches} page fetches, errors {stats.errors}"
    )
    errors = ", ".join(f"{k} x{v}" for k, v in sorted(stats.errors.items())) or "none"
    out.append(
        Row(
            "UI live",
            t.label,
            f"{PAGES} open nodes pages ({nodes} nodes) refreshing as app.js does, {wall:.0f} s: "
            f"{refreshes} refreshes, of which {stats.page_fetches} re-fetched the page; "
            f"errors: {errors}",
            "server < 5 % of a core",
            f"{share:.1%} of a core ({per_refresh:.1f} CPU ms per refresh; idle {idle:.1%}); "
            f"refresh p50 {percentile(stats.poll_seconds, 50) * 1000:.0f} ms",
            share < CPU_GOAL and not stats.errors,
        )
    )
    return out


UI_NOTE = """\
## UI: the nodes page and its live updates (issue 8)

Produced by `./dev bench --only ui` (bench/ui.py): one server per backend with 100 executors x
10 nodes, each node observed once through the real protocol (phase, height, peers, disk). The
page row times GET /nodes with an admin's session cookie over one kept connection (after 3
warm-up loads), with the server's CPU time per page beside it (steadier on a busy machine). The
live row opens 50 simulated nodes pages, each doing every 2 s what app.js does (its poll query,
read from app.js; a GET of the page when the nodes returned are not the rows shown), starts
spread over one period, and divides the server's CPU seconds over the window by the window's
wall seconds; nothing else loads the server meanwhile (its idle share, the sweeps, is given
beside it). CPU ms per refresh is that CPU over the refreshes answered.
"""


def section(rows: list[Row], quick: bool) -> str:
    """The `ui` section of docs/benchmarks.md."""
    return "\n".join(
        [
            UI_NOTE,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if quick else ''}; "
            f"{machine_facts()}.",
            "",
            "| goal | backend | load | goal | measured | met |",
            "|---|---|---|---|---|---|",
            *[r.markdown() for r in rows],
        ]
    )


def run(backends: list[str], sizes: UiSizes) -> list[Row]:
    """Both UI goals on a fresh server per backend."""
    rows: list[Row] = []
    for backend in backends:
        with target(backend) as t:
            rows += measure(t, sizes)
    return rows


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for row in run(backends, QUICK if args.quick else FULL):
        print(row.markdown())


if __name__ == "__main__":
    main()
