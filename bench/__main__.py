"""Control-plane benchmarks against real server processes: `./dev bench`.

Measures request latency of the operations users and executors repeat most, and how fast a held
spec poll wakes after a commit, on SQLite and PostgreSQL; then the load scenarios of issue 8
(bench/loadgen/: many simulated executors on one server) and a profile of the server under that
load. Each part rewrites its own section of docs/benchmarks.md (`--only` runs some parts and
keeps the others' sections; `--quick` runs in seconds). It reuses the test harness to start
servers.
"""

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from tests.support.fleet import CREATE_NODE, LIFECYCLE, LITECOIN_SPEC, NODE, FakeExecutor, make_org
from tests.support.gql import Client
from tests.support.server import (
    ServerProcess,
    admin_token,
    create_pg_database,
    drop_pg_database,
)

from bench import agent_convergence, agent_overhead, ui
from bench.loadgen import scenarios as loadgen_scenarios
from bench.loadgen import suite as loadgen_suite
from bench.report import machine_facts, replace_section
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@dataclass
class Result:
    backend: str
    name: str
    samples: list[float]

    def row(self) -> str:
        ms = sorted(s * 1000 for s in self.samples)
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        return (
            f"| {self.backend} | {self.name} | {len(ms)} | {statistics.median(ms):.1f} | "
            f"{p95:.1f} | {max(ms):.1f} |"
        )


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds one call takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _cli_nodes_list(url: str, token: str | None) -> None:
    """`nodeplane nodes list` as a user runs it: a new process, the table on its stdout."""
    subprocess.run(
        [str(Path(sys.executable).parent / "nodeplane"), "nodes", "list"],
        env={**os.environ, "NODEPLANE_URL": url, "NODEPLANE_TOKEN": token or ""},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def run_backend(backend: str, n: int) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix=f"nodeplane-bench-{backend}-"))
    url = f"sqlite:///{workdir / 'bench.db'}" if backend == "sqlite" else create_pg_database()
    server = ServerProcess(database_url=url, workdir=workdir, heartbeat_timeout=60)
    server.start()
    try:
        token = admin_token(server.url)
        org = make_org(server.url, Client(server.url, token))
        executor = FakeExecutor(server.url, org.executor_key())
        executor.sync()
        results: list[Result] = []

        ids: list[str] = []

        def create(i: int) -> None:
            data = org.owner(
                CREATE_NODE,
                {"input": {"executorId": executor.id, "name": f"n{i}", "spec": LITECOIN_SPEC}},
            )
            ids.append(data["createNode"]["id"])

        def stop(i: int) -> None:
            org.owner(LIFECYCLE, {"id": ids[i], "action": "STOP"})

        results.append(Result(backend, "createNode", [timed(partial(create, i)) for i in range(n)]))
        results.append(
            Result(
                backend,
                "node(id) query",
                [timed(partial(org.owner, NODE, {"id": ids[i]})) for i in range(n)],
            )
        )
        results.append(
            Result(
                backend,
                "nodes list (first 50)",
                [
                    timed(lambda: org.owner("{ nodes(first: 50) { items { id phase } } }"))
                    for _ in range(n // 4)
                ],
            )
        )
        results.append(
            Result(
                backend,
                f"CLI `nodeplane nodes list` ({len(ids)} nodes), whole process",
                [timed(partial(_cli_nodes_list, server.url, org.owner.token)) for _ in range(10)],
            )
        )
        results.append(
            Result(
                backend,
                "lifecycle STOP",
                [timed(partial(stop, i)) for i in range(n)],
            )
        )
        observations = {
            nid: ObservedNodeState(
                revision=2, processes=[ObservedProcess(role="node", status=ProcessStatus.STOPPED)]
            )
            for nid in ids[:100]
        }
        results.append(
            Result(
                backend,
                f"syncExecutor ({len(observations)} nodes)",
                [timed(lambda: executor.sync(observations)) for _ in range(20)],
            )
        )

        # Wake latency: a poll is held, a commit happens, how long until the poll returns.
        wakes: list[float] = []
        held = {x: 2 for x in ids}  # every node was stopped once: revision 2
        for i in range(min(n, 30)):
            nid = ids[i]
            known = dict(held)
            returned: list[float] = []

            def held_poll(known: dict[str, int] = known, returned: list[float] = returned) -> None:
                executor.poll(known, wait=20)
                returned.append(time.perf_counter())

            t = threading.Thread(target=held_poll)
            t.start()
            time.sleep(0.3)  # let the poll reach the server and park
            sent = time.perf_counter()
            org.owner(LIFECYCLE, {"id": nid, "action": "START"})
            t.join(30)
            held[nid] = 3
            wakes.append(returned[0] - sent)
        results.append(Result(backend, "held poll returns, from commit sent", wakes))
        return results
    finally:
        server.stop()
        if backend == "postgresql":
            drop_pg_database(url)


LATENCY_NOTE = """\
## Request latency, one request at a time

Produced by `./dev bench` (bench/__main__.py): one real `nodeplane server` process per
backend on loopback, requests sent one at a time over HTTP by the benchmark, end-to-end
latency as the client sees it (each request opens a new connection: a kept connection, as
agents use, answers in a few ms; the load rows below use kept connections). The poll row is
the time from sending a lifecycle mutation to a spec poll, already held on the server,
returning with the new revision. The agent rows (bench/agent_convergence.py) time a request
until the API shows the target phase, with a real agent on the process driver running
litecoind regtest.
"""

LOAD_NOTE = """\
## Load: many executors on one server (issue 8)

Produced by `./dev bench` (bench/loadgen/): simulated executors speak the real protocol over
kept HTTP connections (aiohttp, a fifth of httpx's CPU per request: the generator shares the
machine with the server) from worker processes of their own (never the server's event loop),
each with its own executor key: `syncExecutor` with 10 node observations every 5 s (jittered
starts), each observation at exactly the revision its spec poll last returned and carrying what
a probed node's does (height, peers, CPU time, memory, disk), whose values move once per metrics
interval (30 s, the agent's default) at each executor's own moment, so one sync in six stores
observations as a real fleet's do; and one `executorSpecs` poll held and re-issued as soon as it
returns. P3 ramps the executor count until syncExecutor p99 reaches 100 ms. Each step's window
begins once the fleet's start is absorbed (every executor's first syncs are writes and come
within one interval): at least 25 s after the start, then at the end of the first sync interval
in which the fleet's syncs were answered, at most 1 % of them slower than 100 ms and none
failed; the row says how long that took, and a start not absorbed within 120 s is measured
anyway. The window's errors are its own; the start's are shown apart. P1 flips random nodes
(STOP/START), four a second during each P3 window (120 actions, so that the p99 is not simply
the slowest), and times the action's request to its executor's poll returning the new revision;
P4 holds one poll per executor with no syncs and times ten actions a second for 12 s. Server
CPU per sync is the server process's CPU time in the window (all its work: syncs, polls,
actions, sweeps) over the syncs answered; on PostgreSQL the database backends' CPU is given
beside it. Latencies of syncs still unanswered when a step stopped count as lower bounds. The
scrape row reads `/metrics` three times with the fleet the ramp left (its observations stored),
from a process of its own, while a health check is sent every 5 ms: how long those wait is how
long a sync arriving during a Prometheus scrape would (the goal is ours; the issue sets none). """


def _load_section(rows: list[loadgen_scenarios.Row], quick: bool) -> str:
    return "\n".join(
        [
            LOAD_NOTE,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if quick else ''}; "
            f"{machine_facts()}.",
            "",
            "| goal | backend | load | goal | measured | met |",
            "|---|---|---|---|---|---|",
            *[r.markdown() for r in rows],
        ]
    )


AGENT_NOTE = """\
## Agent overhead: one agent holding many litecoind nodes (issue 8, P5)

Produced by `./dev bench --only agent` (bench/agent_overhead.py): a control plane on SQLite, one
`nodeplane agent` on the process driver with the default intervals (heartbeat 5 s, supervisor 5 s,
reports 10 s, resync 30 s, 25 s spec polls), N litecoind regtest nodes deployed through the API.
The window opens once every node is RUNNING and 20 s have passed. Only the agent process is
measured: its VmRSS sampled every 2 s, and its utime + stime over the window's wall time, plus the
CPU of short-lived helpers it ran and reaped (`litecoind --version`). The clients are the agent's
children, but neither figure includes theirs (a client that exited in the window would be counted
with the helpers: the run line says how many did). Profile: see the notes below the table.
"""


def _agent_section(result: agent_overhead.Overhead, quick: bool) -> str:
    return "\n".join(
        [
            AGENT_NOTE,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if quick else ''}; "
            f"{machine_facts()}. {result.running} of {result.nodes} nodes RUNNING when the "
            f"window closed; {result.client_exits} clients exited in it; the clients were the "
            f"agent's children: {'yes' if result.clients_are_children else 'no'}.",
            "",
            "| goal | backend | load | goal | measured | met |",
            "|---|---|---|---|---|---|",
            *[r.markdown() for r in result.rows()],
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="samples per operation")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update docs")
    parser.add_argument(
        "--agent-rounds", type=int, default=5, help="lifecycle rounds with an agent"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small counts and short windows: seconds, for development",
    )
    parser.add_argument(
        "--only",
        choices=["latency", "load", "profile", "agent", "ui"],
        action="append",
        help="run only these parts (repeatable); the others' sections in the docs are kept",
    )
    parser.add_argument("--ramp", help="P3 executor counts, comma-separated (default by mode)")
    parser.add_argument(
        "--held-polls", help="P4 held-poll counts, comma-separated (default by mode)"
    )
    parser.add_argument(
        "--window", type=float, help="seconds measured per P3 step (default by mode)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        help="fewest seconds before each P3 window, more until the start settles (default by mode)",
    )
    parser.add_argument(
        "--profile-executors", type=int, help="executors during the profile (default by mode)"
    )
    parser.add_argument("--profile-seconds", type=float, default=30.0)
    parser.add_argument(
        "--agent-nodes", type=int, help="P5 litecoind nodes on one agent (default by mode)"
    )
    parser.add_argument("--agent-seconds", type=float, help="P5 seconds measured (default by mode)")
    parser.add_argument(
        "--workers",
        default=f"1,{os.cpu_count() or 1}",
        help="server processes on PostgreSQL for P3/P1, comma-separated (default: 1 and cores)",
    )
    args = parser.parse_args()
    parts = set(args.only or ["latency", "load", "profile", "agent", "ui"])
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    sizes = loadgen_scenarios.QUICK if args.quick else loadgen_scenarios.FULL
    if args.ramp:
        sizes = dataclasses.replace(sizes, ramp=tuple(int(x) for x in args.ramp.split(",")))
    if args.window:
        sizes = dataclasses.replace(sizes, window=args.window)
    if args.warmup:
        sizes = dataclasses.replace(sizes, warmup=args.warmup)
    if args.held_polls:
        sizes = dataclasses.replace(
            sizes, held_polls=tuple(int(x) for x in args.held_polls.split(","))
        )

    document = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"

    def save(section: str, text: str) -> None:
        # Each part's section is written as soon as it is measured: a later part that fails
        # does not throw away what an hour of measuring found.
        nonlocal document
        document = replace_section(document, section, text)
        if not args.no_write:
            RESULTS.parent.mkdir(exist_ok=True)
            RESULTS.write_text(document)

    if "latency" in parts:
        n = min(args.n, 20) if args.quick else args.n
        results = [r for b in backends for r in run_backend(b, n)]
        rounds = min(args.agent_rounds, 1) if args.quick else args.agent_rounds
        if rounds:
            converged = agent_convergence.run(rounds)
            results += [
                Result("sqlite + agent", name, values) for name, values in converged.items()
            ]
        table = [
            LATENCY_NOTE,
            f"Last run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"Python {platform.python_version()}, run id {uuid.uuid4().hex[:6]}.",
            "",
            "| backend | operation | samples | p50 ms | p95 ms | max ms |",
            "|---|---|---:|---:|---:|---:|",
            *[r.row() for r in results],
        ]
        save("latency", "\n".join(table))
    if "load" in parts:
        pg_workers = sorted({int(x) for x in args.workers.split(",")})
        rows = loadgen_suite.run_scenarios(backends, sizes, pg_workers)
        save("load", _load_section(rows, args.quick))
    if "profile" in parts:
        executors = args.profile_executors or (50 if args.quick else 300)
        seconds = min(args.profile_seconds, 10.0) if args.quick else args.profile_seconds
        profiles = [loadgen_suite.profile_sync_load(b, executors, seconds) for b in backends]
        save(
            "profile",
            "## Profile of the server under sync load\n\n"
            "cProfile of the server's main thread (NODEPLANE_PROFILE, see "
            "src/nodeplane/controlplane/profiling.py) during a steady sync load; cProfile "
            "slows Python calls, so these runs are not the ones measured above.\n\n"
            + "\n\n".join(profiles),
        )
    if "agent" in parts:
        overhead = agent_overhead.run(
            args.agent_nodes or (5 if args.quick else 50),
            args.agent_seconds or (30.0 if args.quick else 300.0),
        )
        save("agent", _agent_section(overhead, args.quick))
    if "ui" in parts:
        rows = ui.run(backends, ui.QUICK if args.quick else ui.FULL)
        save("ui", ui.section(rows, args.quick))
    print(document)


if __name__ == "__main__":
    main()
