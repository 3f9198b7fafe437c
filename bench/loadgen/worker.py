"""A worker process: a share of the simulated executors on an event loop of its own.

The load generator runs in processes of its own so that its work never shares the server's
event loop (or this orchestrator's). Every simulated executor has its own HTTP clients, as an
agent has its own pool, with their connections kept alive: one for its syncs and one for its held
poll (simulated.py `ExecutorClients`). (One pool shared by a worker's executors was tried first:
httpcore assigns requests to connections by scanning every queued request against every
connection, so with hundreds of requests held in one pool the generator spent most of a core
on bookkeeping once the server slowed down, on a machine whose two cores the server needs.)
"""

import asyncio
import os
import random
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import uvloop

from bench.loadgen.procstat import cpu_seconds
from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.simulated import POLL_ERRORS, SimulatedExecutor, executor_clients
from bench.loadgen.stats import Progress, WorkerReport
from nodeplane.controlplane.gc_policy import settle_after_startup

# Executors of one worker catching up at once at the end of a run (LoadOptions.final_sync).
FINISH_CONCURRENCY = 10


@dataclass(frozen=True)
class LoadOptions:
    """How the simulated executors behave."""

    # Seconds between syncs; None: the executors only hold spec polls (P4).
    sync_interval: float | None = 5.0
    # The wait each spec poll asks for (the server caps it at NODEPLANE_MAX_POLL_WAIT).
    poll_wait: float = 30.0
    # Seconds a sync (or a poll, beyond its wait) may take before it counts as an error.
    request_timeout: float = 10.0
    # Executors start over this many seconds (default: one sync interval), spread at random.
    spread: float | None = None
    # Executors start holding revision 1 of every node, as an agent restarted with the specs it
    # keeps on disk does: their first poll is held at once instead of returning every spec.
    known_from_start: bool = False
    # How often each executor's metric values move (the agent's Intervals.metrics); None: never,
    # so every sync after the first repeats the one before.
    metrics_interval: float | None = 30.0
    # At stop, every executor catches up with one poll and reports with one last sync, so the
    # server's observed revisions can be checked against what the executors hold.
    final_sync: bool = False


def worker_main(
    base_url: str,
    specs: list[SimulatedExecutorSpec],
    options: LoadOptions,
    ready: "Queue[int]",
    start: Event,
    stop: Event,
    results: "Queue[object]",
    progress: Progress | None = None,
) -> None:
    """Process entry: say ready, run the executors from `start` until `stop` (counting their
    syncs in `progress` as they finish), send the report."""
    # libuv's loop, as the server's: the load generator shares the machine with the server, and
    # the executors it stands for would each run on a host of their own.
    report = uvloop.run(_run(base_url, specs, options, ready, start, stop, progress))
    report.progress = None  # shared memory: it goes with the process, not in the report
    results.put(report)


async def _run(
    base_url: str,
    specs: list[SimulatedExecutorSpec],
    options: LoadOptions,
    ready: "Queue[int]",
    start: Event,
    stop: Event,
    progress: Progress | None,
) -> WorkerReport:
    report = WorkerReport(progress=progress)
    clients = [executor_clients(base_url) for _ in specs]
    rng = random.Random(os.getpid())
    try:
        executors = [
            SimulatedExecutor(
                spec,
                http,
                report,
                sync_interval=options.sync_interval,
                poll_wait=options.poll_wait,
                request_timeout=options.request_timeout,
                metrics_interval=options.metrics_interval,
                metrics_phase=rng.uniform(0, options.metrics_interval or 1.0),
            )
            for spec, http in zip(specs, clients, strict=True)
        ]
        # The generator's own collector pauses would count as server latency: the same policy
        # as the server's (full passes on a timer the run never reaches).
        settle_after_startup()
        loop = asyncio.get_running_loop()
        ready.put(os.getpid())
        await loop.run_in_executor(None, start.wait)
        cpu_before = cpu_seconds(os.getpid())
        began = time.monotonic()
        spread = options.spread if options.spread is not None else (options.sync_interval or 5.0)
        tasks: list[asyncio.Task[None]] = []
        for ex in executors:
            if options.known_from_start:
                ex.assume_known(1)
            # Jittered: a fleet's agents started at different times, so their syncs do not all
            # fire at once. The poll goes first so the first sync already knows revisions.
            at = began + rng.uniform(0, spread)
            tasks.append(asyncio.create_task(ex.poll_forever(at)))
            if options.sync_interval is not None:
                tasks.append(asyncio.create_task(ex.sync_forever(at + 0.5)))
        await loop.run_in_executor(None, stop.wait)
        stopped = time.monotonic()
        report.unfinished.extend(
            (ex.sync_in_flight, stopped - ex.sync_in_flight)
            for ex in executors
            if ex.sync_in_flight is not None
        )
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if options.final_sync:
            # A few at a time: the check after a run is not a stampede test.
            gate = asyncio.Semaphore(FINISH_CONCURRENCY)
            await asyncio.gather(*(_finish(ex, report, gate) for ex in executors))
        report.cpu_seconds = cpu_seconds(os.getpid()) - cpu_before
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    return report


async def _finish(ex: SimulatedExecutor, report: WorkerReport, gate: asyncio.Semaphore) -> None:
    """Catch up on specs without waiting, then report them in one last sync."""
    async with gate:
        try:
            await ex.poll_once(0)
        except POLL_ERRORS as exc:  # counted: the check that follows sees it
            report.error(f"final poll {type(exc).__name__}", time.monotonic())
            return
        await ex.sync_once()
