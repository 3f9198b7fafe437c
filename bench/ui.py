"""The UI goals of issue 8: the nodes page with 1,000 nodes, and live updates for 50 open pages.

A server on a fresh database gets 100 executors x 10 nodes (provisioned straight into the
database, then one sync each through the real protocol so every row has an observed phase and
height). Then, with nothing else loading the server:

- page: GET /nodes (its first page, at the default page size and at the largest) with the
  admin's session cookie over one kept connection, timed;
- live updates: the fleet syncs every 5 s (from a process of its own), a few percent of its
  observations changing each time as a synced fleet's heights do, and the server's CPU share is
  read from /proc over alternating windows without open pages and with 50 open nodes streams
  (real SSE clients of /nodes/stream, reading every event as app.js does): the streams' cost is
  the mean share with them less the mean without. The ratio of CPU
  seconds to wall seconds is steady on a busy machine, where latency is not.
"""

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import random
import re
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.scenarios import Row
from bench.loadgen.simulated import SimulatedExecutor, executor_clients
from bench.loadgen.stats import WorkerReport, percentile
from bench.loadgen.target import Target, target
from bench.report import machine_facts
from nodeplane.controlplane.api.context import SESSION_COOKIE
from nodeplane.controlplane.web.live import FLUSH_SECONDS
from nodeplane.controlplane.web.pages import DEFAULT_PAGE_SIZE, PAGE_SIZES
from nodeplane.protocol import NodeObservation, ObservedNodeState, ObservedProcess, ProcessStatus

EXECUTORS = 100
NODES_PER_EXECUTOR = 10
PAGE_GOAL = 0.200
CPU_GOAL = 0.05
PAGES = 50
# The fleet's cadence, and the share of its observations that change per sync (heights moving
# on a synced fleet); the rest repeat, which the server stores as a report time only.
SYNC_INTERVAL = 5.0
CHANGE_SHARE = 0.03
# Syncs in flight while the fleet reports its first observations.
SYNC_CONCURRENCY = 20
# Fleet processes are spawned (not forked) so none inherits this process's threads or loops.
_CTX = multiprocessing.get_context("spawn")
ROW_ID = re.compile(rb'<tr data-node-id="([0-9a-f-]{36})"')
# The page's "Rows a-b of N": N is every node, whatever the page shows.
TOTAL = re.compile(rb'data-total="(\d+)"')


@dataclass(frozen=True)
class UiSizes:
    """How many page loads are timed and how long the open pages are watched."""

    page_requests: int
    # The live row's windows (seconds each) and how many pairs of them.
    window: float
    rounds: int


QUICK = UiSizes(page_requests=20, window=5.0, rounds=3)
FULL = UiSizes(page_requests=50, window=15.0, rounds=6)


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
    async with executor_clients(url) as http:

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
    """GET of a nodes page, timed: seconds per request, the server's CPU seconds per request,
    and the rows, the total the page names and the bytes of the last answer."""

    seconds: list[float]
    cpu_per_request: float
    rows: int
    total: int
    size: int


def page_latency(t: Target, requests: int, path: str = "/nodes") -> PageLoads:
    """`requests` loads of `path`, one after another over one kept connection."""
    samples: list[float] = []
    rows = total = size = 0
    cpu0 = 0.0
    with httpx.Client(base_url=t.server.url, cookies={SESSION_COOKIE: t.token}, timeout=30) as http:
        for i in range(requests + 3):
            if i == 3:
                cpu0 = t.cpu_seconds()
            started = time.perf_counter()
            response = http.get(path)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if i >= 3:  # the first loads warm caches and the pool
                samples.append(elapsed)
            rows, size = len(ROW_ID.findall(response.content)), len(response.content)
            found = TOTAL.search(response.content)
            total = int(found.group(1)) if found else 0
    return PageLoads(samples, (t.cpu_seconds() - cpu0) / requests, rows, total, size)


class _ChangingExecutor(_RichExecutor):
    """A synced fleet's executor: each sync repeats each node's last observation, except that
    a `change_share` of them report a new height (what pushes rows to the open pages)."""

    def __init__(self, *args: Any, change_share: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._change_share = change_share
        self._last: dict[str, dict[str, object]] = {}
        self.changes = 0

    def _observation(self, node_id: str) -> dict[str, object]:
        last = self._last.get(node_id)
        if last is None or random.random() < self._change_share:
            last = super()._observation(node_id)
            self._last[node_id] = last
            self.changes += 1
        return last


@dataclass(frozen=True)
class FleetResult:
    """What the syncing fleet did: syncs answered, observations it changed, errors."""

    syncs: int
    changes: int
    errors: dict[str, int]
    seconds: float

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.seconds if self.seconds > 0 else 0.0


def _fleet_main(
    url: str,
    specs: list[SimulatedExecutorSpec],
    change_share: float,
    started: "multiprocessing.synchronize.Event",
    stop: "multiprocessing.synchronize.Event",
    results: "multiprocessing.Queue[FleetResult]",
) -> None:
    async def run() -> FleetResult:
        report = WorkerReport()
        clients = [executor_clients(url) for _ in specs]
        executors = [
            _ChangingExecutor(
                spec,
                http,
                report,
                sync_interval=SYNC_INTERVAL,
                poll_wait=0,
                request_timeout=30,
                change_share=change_share,
            )
            for spec, http in zip(specs, clients, strict=True)
        ]
        now = time.monotonic()
        tasks = []
        for ex in executors:
            ex.assume_known(1)
            at = now + random.uniform(0, SYNC_INTERVAL)
            tasks.append(asyncio.create_task(ex.sync_forever(at)))
        started.set()
        await asyncio.to_thread(stop.wait)
        seconds = time.monotonic() - now
        for task in tasks:
            task.cancel()
        # A sync loop that died is an error of the run, not a quiet fleet.
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                report.error(f"sync loop {type(outcome).__name__}", time.monotonic())
        await asyncio.gather(*(http.close() for http in clients))
        # The first sync of each node reports a new observation: not a steady change.
        changes = sum(ex.changes for ex in executors) - sum(len(s.node_ids) for s in specs)
        return FleetResult(len(report.syncs), changes, dict(report.errors), seconds)

    results.put(asyncio.run(run()))


@dataclass
class StreamStats:
    """What the open streams received."""

    expected: int
    opened: int = 0
    events: int = 0
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # Set once every stream has opened or failed.
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self._check()

    def open(self) -> None:
        self.opened += 1
        self._check()

    def _check(self) -> None:
        if self.opened + sum(self.errors.values()) >= self.expected:
            self.settled.set()


async def _read_stream(url: str, token: str, stats: StreamStats, headers: dict[str, str]) -> None:
    """One open nodes page's stream, read and parsed as app.js's EventSource does, until
    cancelled."""
    async with httpx.AsyncClient(
        base_url=url, cookies={SESSION_COOKIE: token}, headers=headers, timeout=None
    ) as http:
        try:
            async with http.stream("GET", "/nodes/stream") as response:
                if response.status_code != 200:
                    stats.error(f"http {response.status_code}")
                    return
                stats.open()
                name = ""
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        stats.events += 1
                        if name == "rows":
                            stats.rows += len(data["rows"])
        except httpx.HTTPError as exc:
            stats.error(type(exc).__name__)


@dataclass(frozen=True)
class LiveCost:
    """The server's CPU share in alternating windows without and with the open streams."""

    without: list[float]
    with_streams: list[float]
    window: float
    streams: StreamStats
    fleet: FleetResult

    @property
    def base(self) -> float:
        return statistics.fmean(self.without)

    @property
    def live(self) -> float:
        return statistics.fmean(self.with_streams) - self.base

    @property
    def spread(self) -> float:
        """The standard error of `live`, from the rounds' differences."""
        differences = [w - o for w, o in zip(self.with_streams, self.without, strict=True)]
        if len(differences) < 2:
            return float("nan")
        return float(statistics.stdev(differences) / len(differences) ** 0.5)


def live_cost(t: Target, pages: int, window: float, rounds: int, change_share: float) -> LiveCost:
    """The fleet syncing with `change_share` of observations changing; the server's CPU share
    over `rounds` pairs of windows, one without streams and one with `pages` open streams (the
    pairs adjacent, so that the machine's drifting load cancels out)."""
    specs = t.fleet("ui", EXECUTORS, NODES_PER_EXECUTOR)
    started, stop = _CTX.Event(), _CTX.Event()
    results: multiprocessing.Queue[FleetResult] = _CTX.Queue()
    fleet = _CTX.Process(
        target=_fleet_main,
        args=(t.server.url, specs, change_share, started, stop, results),
        daemon=True,
    )
    fleet.start()

    def share(seconds: float) -> float:
        cpu0, wall0 = t.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (t.cpu_seconds() - cpu0) / (time.monotonic() - wall0)

    total = StreamStats(pages * rounds)

    async def with_streams() -> float:
        stats = StreamStats(pages)
        tasks = [
            asyncio.create_task(_read_stream(t.server.url, t.token, stats, browser_headers(t)))
            for _ in range(pages)
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await stats.settled.wait()
        await asyncio.sleep(2 * FLUSH_SECONDS)  # each stream past its first flush
        events0, rows0 = stats.events, stats.rows
        measured = await asyncio.to_thread(share, window)
        total.opened += stats.opened
        total.events += stats.events - events0
        total.rows += stats.rows - rows0
        for kind, count in stats.errors.items():
            total.errors[kind] = total.errors.get(kind, 0) + count
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return measured

    without: list[float] = []
    during: list[float] = []
    try:
        if not started.wait(60):
            raise RuntimeError("the syncing fleet did not start")
        time.sleep(SYNC_INTERVAL + 2)  # every executor past its first (all-changed) sync
        for _ in range(rounds):
            without.append(share(window))
            during.append(asyncio.run(with_streams()))
            time.sleep(2 * FLUSH_SECONDS)  # the closed streams gone
    finally:
        stop.set()
        result = results.get(timeout=60)
        fleet.join(timeout=30)
    return LiveCost(without, during, window, total, result)


def measure(t: Target, sizes: UiSizes, log: Callable[[str], None] = print) -> list[Row]:
    """Both UI goals on a populated target; the rows."""
    nodes = populate(t)
    out: list[Row] = []
    largest = max(PAGE_SIZES)
    for per_page, path in ((DEFAULT_PAGE_SIZE, "/nodes"), (largest, f"/nodes?per_page={largest}")):
        loads = page_latency(t, sizes.page_requests, path)
        p50, p99 = percentile(loads.seconds, 50), percentile(loads.seconds, 99)
        cpu_ms = loads.cpu_per_request * 1000
        log(
            f"{t.label}: GET {path} p50 {p50 * 1000:.0f} ms p99 {p99 * 1000:.0f} ms, "
            f"{cpu_ms:.0f} CPU ms each, {loads.rows} rows of {loads.total}"
        )
        whole = loads.rows == min(per_page, nodes) and loads.total == nodes
        default = per_page == DEFAULT_PAGE_SIZE
        out.append(
            Row(
                "UI page" if default else "UI page (largest)",
                t.label,
                f"GET {path}, {nodes} nodes: the first page at the "
                f"{'default' if default else 'largest'} page size ({loads.rows} rows of "
                f"{loads.total}, {loads.size / 1024:.0f} KB), kept connection, "
                f"{len(loads.seconds)} requests",
                "nodes page with 1,000 nodes answers in < 200 ms (p99)"
                if default
                else "none (the largest page size, for reference)",
                f"p50 {p50 * 1000:.0f} ms / p99 {p99 * 1000:.0f} ms (server CPU {cpu_ms:.0f} ms "
                "per page)",
                # The reference row is met or not only in what it shows: every row it asked for.
                (p99 < PAGE_GOAL and whole) if default else (None if whole else False),
            )
        )
    cost = live_cost(t, PAGES, sizes.window, sizes.rounds, CHANGE_SHARE)
    streams, fleet = cost.streams, cost.fleet
    problems = {**streams.errors, **{f"sync {k}": v for k, v in fleet.errors.items()}}
    rounds = len(cost.with_streams)
    log(
        f"{t.label}: {PAGES} streams {cost.live:.1%} ± {cost.spread:.1%} of a core (with "
        f"{' '.join(f'{x:.1%}' for x in cost.with_streams)}, without "
        f"{' '.join(f'{x:.1%}' for x in cost.without)}); {streams.opened} opened, "
        f"{streams.rows} rows in {streams.events} events, {fleet.syncs} syncs, "
        f"{fleet.changes_per_second:.1f} changed observations/s, errors {problems}"
    )
    errors = ", ".join(f"{k} x{v}" for k, v in sorted(problems.items())) or "none"
    measured_streams = max(streams.opened, 1)
    out.append(
        Row(
            "UI live",
            t.label,
            f"{PAGES} open nodes streams (SSE clients of /nodes/stream) over {nodes} nodes "
            f"syncing every {SYNC_INTERVAL:.0f} s, {CHANGE_SHARE:.0%} of observations changing "
            f"({fleet.changes_per_second:.1f} changed/s); {rounds} rounds of {cost.window:.0f} s "
            f"without and {cost.window:.0f} s with the streams, each stream getting "
            f"{streams.rows / measured_streams / cost.window:.1f} rows in "
            f"{streams.events / measured_streams / cost.window:.1f} events/s; errors: {errors}",
            "streams < 5 % of a core",
            f"{cost.live:.1%} ± {cost.spread:.1%} of a core for the streams (server "
            f"{cost.base + cost.live:.1%} with them, {cost.base:.1%} for the syncs alone)",
            cost.live < CPU_GOAL
            and streams.opened == PAGES * rounds
            and streams.rows > 0
            and not problems,
        )
    )
    return out


UI_NOTE = """\
## UI: the nodes page and its live updates (issue 8)

Produced by `./dev bench --only ui` (bench/ui.py): one server per backend with 100 executors x 10
nodes, each node observed once through the real protocol (phase, height, peers, disk). The page rows
time GET /nodes with an admin's session cookie over one kept connection (after 3 warm-up loads),
with the server's CPU time per page beside it (steadier on a busy machine): the page shows one page
of the list, its first at the default size (100 rows, the goal's row) and at the largest (500 rows,
for reference); until pages, it showed all 1,000 rows (~185-200 CPU ms per page, p99 ~320-350 ms on
this machine) and cut the list silently past 1,000. The live row keeps the
fleet syncing every 5 s from a process of its own, 3 % of its observations reporting a new height
each time (the rest repeat, which the server stores as a report time only), and reads the server's
CPU share over pairs of adjacent windows: one without open pages, one with 50 open nodes streams
(real SSE clients of GET /nodes/stream with the session cookie, parsing every event as app.js's
EventSource does; each page's own first load is not part of the steady cost and is not made). The
streams' cost is the mean share with them less the mean without (the syncs' own cost, given beside
it), ± the standard error of the pairs' differences. Until rows were pushed, each open page
re-fetched its rows every 2 s: 50 pages of 1,000 nodes took about a full core (~210-225 CPU ms per
refresh). The figure is the server process's CPU only: on PostgreSQL each flush's read of the
changed rows (one statement per second per organization with open pages, whatever the number of
pages) runs in a database backend besides. On a machine that others load, windows a few seconds
apart differ by a few percent: the ± says how far the figure can be trusted.
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
