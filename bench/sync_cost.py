"""What one sync, poll, lifecycle action or read costs the server:
`python -m bench.sync_cost [--backend B] [-n N] [--call CALL] [--calls] [--at-once K]`, CALL one
of sync, moved, poll, renewal, action, chain, list.

One simulated executor with 10 nodes sends N syncs back to back over a kept connection, each
observing every node at the revision it already reported (the steady state of a fleet); with
`--call moved`, each sync's metric values (height, CPU time, ...) have moved since the one
before, as an agent's do once per metrics interval; with `--call poll`, N spec polls that find
nothing new and do not wait (read from the database each time); with `--call renewal`, N polls
that find nothing new and wait 1 ms (a held poll's renewal, answered from what the poll before
read, with a hold of 1 ms instead of 30 s). With `--call action`, N lifecycle actions on one of
its nodes through the first admin's session, STOP and START in turn (each a new revision, an
event and a phase change), with no poll held to wake; with `--call chain`, each such action
followed by the spec poll that picks it up and the sync that reports the node at its new
revision (what one action costs in all, the executor's part included); with `--call list`, N
reads of the nodes list through that session. With `--at-once K`, K executors make each of the
executors' own calls at the same moment, N in all: what a busy server sees, where syncs that
arrive together may be stored together (services/moved_syncs.py). The server's CPU time over
the calls is a ratio that stays put on a noisy machine, unlike latency; on PostgreSQL the
database's transaction and row counters are read around the run as well.

With `--calls`, the server runs under cProfile instead and the figure is the Python function
calls the server makes per sync (the difference between a run of N and one of 2N, so start-up
and warm-up cancel out): not a time, but it does not move when other work shares the machine,
so it compares two versions of the code where CPU time on a busy machine cannot.

With `--loop-turns FILE`, the server times every turn of its event loop (asyncio's loop: slower
than the libuv loop it runs on otherwise) and the run prints the labels that held it longest
(controlplane/profiling.py): where a latency tail under load comes from, turn by turn.
"""

import argparse
import asyncio
import contextlib
import json
import pstats
import signal
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from tests.support.server import PG_ADMIN_URL

from bench.loadgen.procstat import cpu_seconds
from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.run import LIFECYCLE
from bench.loadgen.simulated import SimulatedExecutor, executor_clients
from bench.loadgen.stats import WorkerReport
from bench.loadgen.target import Target, target
from nodeplane.controlplane.profiling import LOOP_TURNS_ENV

_PG_COUNTERS = (
    "xact_commit + xact_rollback",
    "tup_updated + tup_inserted + tup_deleted",
    "tup_fetched",
)
_WHAT = {
    "sync": "syncs of 10 unchanged observations",
    "moved": "syncs of 10 observations whose metric values moved",
    "poll": "spec polls finding nothing new (no wait)",
    "renewal": "spec polls finding nothing new (1 ms wait)",
    "action": "lifecycle actions (STOP and START in turn, no poll held)",
    "chain": "lifecycle actions, each with the poll that picks it up and the sync reporting it",
    "list": "nodes lists (the executor's 10, with their phase and executor)",
}
NODES_LIST = "{ nodes(first: 50) { items { id name phase executor { name } } } }"


@dataclass
class SyncCost:
    """Per-sync averages of one run."""

    backend: str
    call: str
    syncs: int
    server_cpu_ms: float
    database_cpu_ms: float | None
    wall_ms: float
    transactions: float | None
    rows_written: float | None
    rows_fetched: float | None

    def line(self) -> str:
        """A human-readable summary."""
        db = (
            f"; database {self.database_cpu_ms:.2f} ms CPU, {self.transactions:.1f} transactions, "
            f"{self.rows_written:.1f} rows written, {self.rows_fetched:.1f} rows fetched"
            if self.database_cpu_ms is not None
            else ""
        )
        return (
            f"{self.backend}: {self.syncs} {_WHAT[self.call]}: server "
            f"{self.server_cpu_ms:.2f} ms CPU/{self.call}, {self.wall_ms:.2f} ms wall/{self.call}"
            f"{db}"
        )


def _pg_counters(t: Target) -> tuple[int, ...]:
    name = t.database_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            f"SELECT {', '.join(_PG_COUNTERS)} FROM pg_stat_database WHERE datname = %s",
            (name,),
        ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


async def _calls(
    t: Target, specs: list[SimulatedExecutorSpec], n: int, call: str, py_spy: Path | None
) -> tuple[float, float, float, tuple[int, ...] | None]:
    report = WorkerReport()
    async with contextlib.AsyncExitStack() as stack:
        executors = [
            SimulatedExecutor(
                spec,
                await stack.enter_async_context(executor_clients(t.server.url)),
                report,
                sync_interval=None,
                poll_wait=0,
                request_timeout=30,
            )
            for spec in specs
        ]
        user = await stack.enter_async_context(
            httpx.AsyncClient(base_url=t.server.url, headers={"authorization": f"Bearer {t.token}"})
        )
        for simulated in executors:
            simulated.assume_known(1)
        executor, spec = executors[0], specs[0]

        async def moved(executor: SimulatedExecutor) -> None:
            executor.moves += 1
            await executor.sync_once()

        async def as_user(what: str, query: str, variables: dict[str, str] | None = None) -> None:
            response = await user.post(
                "/graphql", json={"query": query, "variables": variables or {}}, timeout=30
            )
            if response.status_code != 200 or response.json().get("errors"):
                report.error(f"{what} {response.status_code}", time.monotonic())

        stopped = False

        async def action() -> None:
            nonlocal stopped
            variables = {"id": spec.node_ids[0], "action": "START" if stopped else "STOP"}
            await as_user("action", LIFECYCLE, variables)
            stopped = not stopped

        async def chain() -> None:
            await action()
            await executor.poll_once(0)
            await executor.sync_once()

        # The executors' own calls, made by every executor at once.
        each: dict[str, Callable[[SimulatedExecutor], Awaitable[object]]] = {
            "sync": SimulatedExecutor.sync_once,
            "moved": moved,
            "poll": lambda e: e.poll_once(0),
            "renewal": lambda e: e.poll_once(0.001),
        }

        async def all_at_once() -> None:
            await asyncio.gather(*(each[call](e) for e in executors))

        once: Callable[[], Awaitable[None]] = (
            all_at_once
            if call in each
            else {
                "action": action,
                "chain": chain,
                "list": lambda: as_user("list", NODES_LIST),
            }[call]
        )
        for _ in range(20):  # warm up: caches, prepared statements, the first writes
            await asyncio.gather(*(e.sync_once() for e in executors))
            await once()
        # PostgreSQL publishes its counters at most every 0.5 s (stats_fetch_consistency).
        await asyncio.sleep(1.1)
        before_pg = _pg_counters(t) if t.backend == "postgresql" else None
        db_pids = t.database_pids()
        db_before = sum(cpu_seconds(p) for p in db_pids)
        spy = _start_py_spy(t.pid, py_spy) if py_spy else None
        cpu_before = cpu_seconds(t.pid)
        started = time.monotonic()
        for _ in range(n // len(executors)):
            await once()
        wall = time.monotonic() - started
        cpu = cpu_seconds(t.pid) - cpu_before
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        db_cpu = sum(cpu_seconds(p) for p in db_pids) - db_before
        await asyncio.sleep(1.1)
        after_pg = _pg_counters(t) if t.backend == "postgresql" else None
    assert not report.errors, dict(report.errors)
    delta = (
        tuple(a - b for a, b in zip(after_pg, before_pg, strict=True))
        if after_pg is not None and before_pg is not None
        else None
    )
    return cpu, db_cpu, wall, delta


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (collapsed stacks in `out`), started before the syncs."""
    spy = subprocess.Popen(
        [
            *("py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "500"),
            *("--output", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached before the first measured sync
    return spy


def measure(
    backend: str,
    n: int,
    call: str = "sync",
    py_spy: Path | None = None,
    at_once: int = 1,
    loop_turns: Path | None = None,
) -> SyncCost:
    """Run `n` unchanged syncs (or empty polls) against a fresh server on `backend`; with
    `py_spy`, sample the server's stacks during them into that file (needs py-spy on PATH;
    costs some CPU). With `at_once` executors (the executors' own calls only), each makes the
    call at the same moment, `n` calls in all. With `loop_turns`, the server times its event
    loop's turns into that file (controlplane/profiling.py; asyncio's loop, so slower)."""
    if at_once > 1 and call not in ("sync", "moved", "poll", "renewal"):
        raise ValueError(f"--at-once is for the executors' own calls, not {call}")
    env = {LOOP_TURNS_ENV: str(loop_turns)} if loop_turns else None
    with target(backend, extra_env=env) as t:
        specs = t.fleet("cost", at_once)
        cpu, db_cpu, wall, pg = asyncio.run(_calls(t, specs, n, call, py_spy))
    calls = n // at_once * at_once
    per = 1000 / calls
    return SyncCost(
        backend=backend,
        call=call,
        syncs=calls,
        server_cpu_ms=cpu * per,
        database_cpu_ms=db_cpu * per if pg is not None else None,
        wall_ms=wall * per,
        transactions=pg[0] / calls if pg else None,
        rows_written=pg[1] / calls if pg else None,
        rows_fetched=pg[2] / calls if pg else None,
    )


def measure_calls(backend: str, n: int, call: str = "sync") -> float:
    """Python function calls the server makes per call (see the module's docstring)."""
    totals = []
    for count in (n, 2 * n):
        with tempfile.TemporaryDirectory(prefix="nodeplane-calls-") as tmp:
            profile = Path(tmp) / "server.pstats"
            with target(backend, profile=profile) as t:
                asyncio.run(_calls(t, t.fleet("cost", 1), count, call, None))
            totals.append(_calls_outside_the_loop(pstats.Stats(str(profile))))
    return (totals[1] - totals[0]) / n


def _calls_outside_the_loop(stats: pstats.Stats) -> int:
    """Calls counted, but for the event loop's own machinery, whose count follows how often the
    loop woke (a matter of timing) rather than the work done."""
    loop_files = ("/asyncio/", "/selectors.py", "/threading.py")
    return sum(
        calls
        for (filename, _, name), (_, calls, *_rest) in stats.stats.items()  # type: ignore[attr-defined]
        if not any(part in filename for part in loop_files) and "poll' of 'select.epoll" not in name
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--call", choices=list(_WHAT), default="sync")
    parser.add_argument(
        "--py-spy", type=Path, help="sample the server with py-spy into FILE.<backend>.txt"
    )
    parser.add_argument(
        "--calls", action="store_true", help="count the server's Python calls per sync instead"
    )
    parser.add_argument(
        "--loop-turns",
        type=Path,
        help="time the server's event-loop turns into FILE.<backend>.json and print the longest",
    )
    parser.add_argument(
        "--at-once",
        type=int,
        default=1,
        metavar="K",
        help="K executors, each making the call at the same moment (sync, moved, poll, renewal)",
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        if args.calls:
            per = measure_calls(backend, args.n, args.call)
            print(f"{backend}: {per:.0f} Python calls per {args.call} in the server", flush=True)
            continue
        out = args.py_spy.with_suffix(f".{backend}.txt") if args.py_spy else None
        turns = args.loop_turns.with_suffix(f".{backend}.json") if args.loop_turns else None
        print(measure(backend, args.n, args.call, out, args.at_once, turns).line(), flush=True)
        if turns is not None:
            print(turns_table(json.loads(turns.read_text())), flush=True)


def turns_table(summary: dict[str, Any], top: int = 10) -> str:
    """The labels that held the event loop longest in all, from a loop-turns file."""
    lines = [
        f"{summary['turns']} turns; histogram: "
        + ", ".join(f"{k}: {v}" for k, v in summary["histogram"].items() if v),
        "| turns | total ms | longest ms | over 10 ms | what ran (where the step ended) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['turns']} | {x['total_ms']:.0f} | {x['longest_ms']:.1f} | {x['over_10ms']} | "
        f"{x['label']} |"
        for x in summary["by_label"][:top]
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
