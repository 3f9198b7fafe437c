"""Percentiles and the small records workers send back to the orchestrator."""

import math
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.context import SpawnContext


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class Progress:
    """One worker's running counts of syncs answered, answered slower than `slow_after` seconds,
    and failed, in memory the orchestrator reads while the load runs (each worker writes only
    its own counters, so they need no lock)."""

    ANSWERED, SLOW, FAILED = range(3)

    def __init__(self, ctx: SpawnContext, slow_after: float) -> None:
        self.slow_after = slow_after
        self._counts = ctx.Array("q", 3, lock=False)

    def synced(self, seconds: float) -> None:
        """Count a sync answered in `seconds`."""
        self._counts[self.ANSWERED] += 1
        if seconds > self.slow_after:
            self._counts[self.SLOW] += 1

    def failed(self) -> None:
        """Count a sync that failed."""
        self._counts[self.FAILED] += 1

    def counts(self) -> tuple[int, int, int]:
        """(answered, slow, failed) so far."""
        answered, slow, failed = self._counts
        return answered, slow, failed


@dataclass
class WorkerReport:
    """What one worker process measured.

    Times are `time.monotonic()` seconds, which on Linux is one clock for every process on the
    machine, so the orchestrator can compare them with its own.
    """

    # (sent at, seconds) for every syncExecutor that was answered without error.
    syncs: list[tuple[float, float]] = field(default_factory=list)
    # (sent at, seconds so far) for syncs still unanswered when the run stopped: lower bounds,
    # kept so an overloaded server's slowest syncs are not silently dropped from the percentiles.
    unfinished: list[tuple[float, float]] = field(default_factory=list)
    # Errors by type: "http 503", "graphql executor_instance_conflict", "ReadTimeout", ...
    errors: Counter[str] = field(default_factory=Counter)
    # (when, type) of each error, so a window counts its own apart from the start-up's.
    error_times: list[tuple[float, str]] = field(default_factory=list)
    # (node id, revision) -> when a spec poll first returned that revision to the executor.
    pickups: dict[tuple[str, int], float] = field(default_factory=dict)
    # node id -> the revision the executor reported in its last answered sync.
    reported: dict[str, int] = field(default_factory=dict)
    # How many spec polls returned (with or without changes) and how many failed.
    polls: int = 0
    # The worker process's own CPU seconds over its run: the load generator's cost.
    cpu_seconds: float = 0.0
    # Live counts for the orchestrator (set in the worker, dropped before the report is sent).
    progress: Progress | None = field(default=None, compare=False, repr=False)

    def synced(self, sent: float, seconds: float) -> None:
        """Record a sync sent at `sent` (monotonic) and answered `seconds` later."""
        self.syncs.append((sent, seconds))
        if self.progress is not None:
            self.progress.synced(seconds)

    def error(self, kind: str, at: float) -> None:
        """Count an error of `kind` that happened at `at` (monotonic)."""
        self.errors[kind] += 1
        self.error_times.append((at, kind))
        if self.progress is not None and kind.startswith("sync "):
            self.progress.failed()

    def errors_between(self, start: float, end: float) -> Counter[str]:
        """Errors by type that happened from `start` until before `end` (monotonic)."""
        return Counter(kind for at, kind in self.error_times if start <= at < end)


def merge(reports: list[WorkerReport]) -> WorkerReport:
    """One report for all workers."""
    out = WorkerReport()
    for r in reports:
        out.syncs.extend(r.syncs)
        out.unfinished.extend(r.unfinished)
        out.errors.update(r.errors)
        out.error_times.extend(r.error_times)
        out.pickups.update(r.pickups)
        out.reported.update(r.reported)
        out.polls += r.polls
        out.cpu_seconds += r.cpu_seconds
    return out
