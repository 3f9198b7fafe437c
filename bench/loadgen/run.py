"""Run the simulated executors in worker processes and measure a window of their load."""

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from bench.loadgen.procstat import cpu_seconds
from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.stats import Progress, WorkerReport, merge, percentile
from bench.loadgen.worker import LoadOptions, worker_main

# Executors per worker process: an asyncio loop keeps a few hundred busy executors (about
# 100 syncs/s) on well under a core, and more processes would only crowd two cores.
PER_WORKER = 500
# Processes are spawned (not forked) so no worker inherits this process's threads or loops.
_CTX = multiprocessing.get_context("spawn")

LIFECYCLE = """
mutation($id: UUID!, $action: LifecycleAction!) {
  requestNodeLifecycleAction(nodeId: $id, action: $action) { revision }
}"""


class LoadRun:
    """Worker processes playing `specs` against `base_url`, started and stopped as one."""

    def __init__(
        self,
        base_url: str,
        specs: list[SimulatedExecutorSpec],
        options: LoadOptions,
        per_worker: int = PER_WORKER,
        slow_after: float = 0.1,
    ) -> None:
        self.base_url = base_url
        self.options = options
        self.executors = len(specs)
        self._ready: multiprocessing.Queue[int] = _CTX.Queue()
        self._results: multiprocessing.Queue[object] = _CTX.Queue()
        self._start = _CTX.Event()
        self._stop = _CTX.Event()
        shares = [specs[i : i + per_worker] for i in range(0, len(specs), per_worker)]
        self._progress = [Progress(_CTX, slow_after) for _ in shares]
        self._workers = [
            _CTX.Process(
                target=worker_main,
                args=(
                    base_url,
                    share,
                    options,
                    self._ready,
                    self._start,
                    self._stop,
                    self._results,
                    progress,
                ),
                daemon=True,
            )
            for share, progress in zip(shares, self._progress, strict=True)
        ]
        self.started_at = 0.0
        self.worker_pids: list[int] = []

    def start(self, timeout: float = 60.0) -> None:
        """Start the workers and, once all are ready, the load (at `started_at`)."""
        for w in self._workers:
            w.start()
        self.worker_pids = [self._ready.get(timeout=timeout) for _ in self._workers]
        self.started_at = time.monotonic()
        self._start.set()

    def counts(self) -> tuple[int, int, int]:
        """Syncs answered, answered slower than `slow_after`, and failed, so far (all workers)."""
        counts = [p.counts() for p in self._progress]
        answered, slow, failed = (sum(c) for c in zip(*counts, strict=True))
        return answered, slow, failed

    def settle(self, minimum: float, interval: float, cap: float) -> float | None:
        """Wait until the fleet's start is absorbed: at least `minimum` seconds from the start,
        then until one whole `interval` (a sync interval) in which the syncs answered cover the
        fleet, at most 1 % were slower than `slow_after` and none failed; at most `cap` seconds
        from the start. Returns the seconds from the start to that interval's end, or None
        when the cap came first.

        Every executor's first syncs are writes (its key's first use, its nodes' first
        observations) and all come within one interval: a fleet starting at once, which a
        fixed warm-up may not cover at a large count, so the window after it would measure the
        start's backlog rather than the fleet running (docs/benchmarks.md)."""
        time.sleep(max(0.0, self.started_at + minimum - interval - time.monotonic()))
        before = self.counts()
        while True:
            time.sleep(interval)
            now = self.counts()
            answered, slow, failed = (a - b for a, b in zip(now, before, strict=True))
            elapsed = time.monotonic() - self.started_at
            if answered >= 0.95 * self.executors and slow <= 0.01 * answered and failed == 0:
                return elapsed
            if elapsed >= cap:
                return None
            before = now

    def stop(self, timeout: float = 120.0) -> WorkerReport:
        """Stop the load and gather every worker's report."""
        self._stop.set()
        reports = [self._results.get(timeout=timeout) for _ in self._workers]
        for w in self._workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
        return merge([r for r in reports if isinstance(r, WorkerReport)])


@dataclass
class Actions:
    """Lifecycle actions sent while the load runs: (node id, new revision) -> when sent."""

    sent: dict[tuple[str, int], float] = field(default_factory=dict)
    # Seconds each action's own request took (send to answer), in the order sent: where a slow
    # pickup's time went, the action or its way to the executor.
    answers: list[float] = field(default_factory=list)
    errors: int = 0

    def pickup_seconds(self, report: WorkerReport) -> tuple[list[float], int]:
        """Seconds from each action's send to its executor's poll returning the new revision,
        and how many actions no poll returned."""
        latencies = [
            report.pickups[key] - sent for key, sent in self.sent.items() if key in report.pickups
        ]
        # A revision cannot reach an executor before it was asked for.
        assert all(s >= 0 for s in latencies), "a pickup matched an older action"
        return latencies, len(self.sent) - len(latencies)


@contextmanager
def lifecycle_actions(
    base_url: str,
    token: str,
    node_ids: list[str],
    rate: float,
    stopped: set[str] | None = None,
    seed: int = 1,
) -> Iterator[Actions]:
    """Send STOP/START to nodes at random, `rate` per second, from a thread, while inside.

    Each node is toggled from running to stopped and back, so every action makes a revision;
    `stopped` holds the nodes left stopped (pass the same set to every call on one server: a
    STOP of a stopped node would make no revision and match an old one).
    """
    actions = Actions()
    done = threading.Event()
    rng = random.Random(seed)
    stopped = set() if stopped is None else stopped

    def send() -> None:
        with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {token}"}) as http:
            due = time.monotonic()
            while not done.is_set():
                node_id = rng.choice(node_ids)
                action = "START" if node_id in stopped else "STOP"
                sent = time.monotonic()
                try:
                    body = http.post(
                        "/graphql",
                        json={"query": LIFECYCLE, "variables": {"id": node_id, "action": action}},
                        timeout=30,
                    ).json()
                    revision = body["data"]["requestNodeLifecycleAction"]["revision"]
                except (httpx.HTTPError, KeyError, TypeError, ValueError):
                    actions.errors += 1
                else:
                    actions.answers.append(time.monotonic() - sent)
                    actions.sent[(node_id, revision)] = sent
                    stopped.symmetric_difference_update({node_id})
                due += 1 / rate
                done.wait(max(0.0, due - time.monotonic()))

    thread = threading.Thread(target=send, name="lifecycle-actions", daemon=True)
    thread.start()
    try:
        yield actions
    finally:
        done.set()
        thread.join(60)


@dataclass
class Window:
    """What the server did between two moments of a run."""

    began: float
    ended: float = 0.0
    # CPU seconds of the server process, and of its PostgreSQL backends (0 on SQLite).
    server_cpu: float = 0.0
    database_cpu: float = 0.0

    def syncs(self, report: WorkerReport) -> list[float]:
        """Latencies of syncs sent in the window (unfinished ones as lower bounds)."""
        return [s for t, s in [*report.syncs, *report.unfinished] if self.began <= t < self.ended]

    def answered(self, report: WorkerReport) -> int:
        """Syncs sent in the window and answered."""
        return sum(1 for t, _ in report.syncs if self.began <= t < self.ended)


@contextmanager
def measured(
    server_cpu: Callable[[], float], database_pids: Callable[[], list[int]]
) -> Iterator[Window]:
    """Time and CPU spent inside the block by the server (`server_cpu()`: its CPU seconds so
    far, workers included) and by the database backends that `database_pids()` names (a backend
    first seen at the end started inside the block)."""
    window = Window(time.monotonic())
    server_before = server_cpu()
    database_before = {p: _cpu_or_zero(p) for p in database_pids()}
    yield window
    window.ended = time.monotonic()
    window.server_cpu = server_cpu() - server_before
    window.database_cpu = sum(
        _cpu_or_zero(p) - database_before.get(p, 0.0) for p in database_pids()
    )


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except FileNotFoundError:  # a backend that has just exited
        return 0.0


def summary(latencies: list[float]) -> str:
    """`p50 / p99 ms` of `latencies`."""
    return f"{percentile(latencies, 50) * 1000:.1f} / {percentile(latencies, 99) * 1000:.1f} ms"
