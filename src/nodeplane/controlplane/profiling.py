"""Optional profiles of the server process, for benchmarks; off unless asked for.

`NODEPLANE_PROFILE=/path/file.pstats` makes `nodeplane server` profile its main thread (the event
loop, where requests are handled) and write the statistics when it exits. cProfile roughly
doubles the cost of Python calls, so benchmarks measure without it and profile in a run of
their own. Work in other threads (aiosqlite runs SQLite in one) appears only as waiting.

`NODEPLANE_LOOP_TURNS=/path/file.json` times every callback the event loop runs (a task's step
from one await to the next, a protocol's read) and writes, at exit, which ones held the loop
longest and what ran in them. Every request waits for the turns ahead of it, so a latency tail
under load is these turns, which neither cProfile (totals per function) nor py-spy (samples)
shows one by one.

Both run the server on asyncio's loop rather than libuv's (http_server.py): libuv waits for I/O
in C, where cProfile cannot tell the wait from the Python frame that yielded last, and runs its
callbacks in C, where they cannot be timed.
"""

import asyncio
import bisect
import cProfile
import heapq
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

PROFILE_ENV = "NODEPLANE_PROFILE"
LOOP_TURNS_ENV = "NODEPLANE_LOOP_TURNS"


def on_asyncio_loop() -> bool:
    """Whether a profile asks for asyncio's event loop instead of libuv's."""
    return bool(os.environ.get(PROFILE_ENV) or os.environ.get(LOOP_TURNS_ENV))


@contextmanager
def profiled() -> Iterator[None]:
    """Profile the block when NODEPLANE_PROFILE names a file, writing the stats there."""
    path = os.environ.get(PROFILE_ENV)
    if not path:
        yield
        return
    # Uvicorn re-raises the SIGTERM that stopped it once it has shut down, under the handler
    # found at start; the default one would end the process before the stats are written.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield
    finally:
        profile.disable()
        profile.dump_stats(path)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# The histogram's upper bounds, in milliseconds; the last bucket is everything longer.
TURN_BUCKETS_MS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)
SLOWEST_KEPT = 50
LABELS_KEPT = 40
_PACKAGE = f"{os.sep}nodeplane{os.sep}"


@dataclass
class _Label:
    turns: int = 0
    seconds: float = 0.0
    longest: float = 0.0
    over_10ms: int = 0


@dataclass
class TurnLog:
    """Every timed turn, summed by label, with a histogram and the slowest kept one by one."""

    started: float = field(default_factory=time.monotonic)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(TURN_BUCKETS_MS) + 1))
    labels: dict[str, _Label] = field(default_factory=dict)
    slowest: list[tuple[float, float, str]] = field(default_factory=list)

    def add(self, label: str, seconds: float) -> None:
        """One turn of `seconds` that ran `label`."""
        ms = seconds * 1000
        self.histogram[bisect.bisect_left(TURN_BUCKETS_MS, ms)] += 1
        kept = self.labels.get(label)
        if kept is None:
            kept = self.labels[label] = _Label()
        kept.turns += 1
        kept.seconds += seconds
        kept.longest = max(kept.longest, seconds)
        kept.over_10ms += ms > 10
        entry = (ms, time.monotonic() - self.started, label)
        if len(self.slowest) < SLOWEST_KEPT:
            heapq.heappush(self.slowest, entry)
        elif entry > self.slowest[0]:
            heapq.heapreplace(self.slowest, entry)

    def summary(self) -> dict[str, Any]:
        """What the file holds: the turns' histogram, the labels that took the most time, and
        the slowest turns with when they came (seconds after the server started)."""
        labels = sorted(self.labels.items(), key=lambda kv: kv[1].seconds, reverse=True)
        bounds = [f"<= {b} ms" for b in TURN_BUCKETS_MS] + [f"> {TURN_BUCKETS_MS[-1]} ms"]
        return {
            "turns": sum(self.histogram),
            "histogram": dict(zip(bounds, self.histogram, strict=True)),
            "by_label": [
                {
                    "label": label,
                    "turns": kept.turns,
                    "total_ms": round(kept.seconds * 1000, 1),
                    "longest_ms": round(kept.longest * 1000, 1),
                    "over_10ms": kept.over_10ms,
                }
                for label, kept in labels[:LABELS_KEPT]
            ],
            "slowest": [
                {"ms": round(ms, 1), "at_s": round(at, 1), "label": label}
                for ms, at, label in sorted(self.slowest, reverse=True)
            ],
        }


def turn_label(callback: object) -> str:
    """What a callback ran: for a task's step, the innermost three of this package's coroutines
    it is suspended in after the step (where the step ended), else the task's own coroutine;
    for any other callback, its name."""
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro: Any = task.get_coro()
        outer = getattr(coro, "__qualname__", type(coro).__name__)
        names: list[str] = []
        while coro is not None:
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            if code is not None and _PACKAGE in code.co_filename:
                names.append(code.co_qualname)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        return "task " + (" > ".join(names[-3:]) if names else outer)
    return str(getattr(callback, "__qualname__", type(callback).__name__))


@contextmanager
def timed_turns() -> Iterator[None]:
    """Time the event loop's turns when NODEPLANE_LOOP_TURNS names a file, writing their summary
    (`TurnLog.summary`) there at exit; asyncio's loop only (`on_asyncio_loop`)."""
    path = os.environ.get(LOOP_TURNS_ENV)
    if not path:
        yield
        return
    log = TurnLog()
    handle = asyncio.events.Handle
    run = handle._run

    def timed_run(self: asyncio.Handle) -> None:
        started = time.perf_counter()
        try:
            run(self)
        finally:
            log.add(turn_label(self._callback), time.perf_counter() - started)  # type: ignore[attr-defined]

    previous = signal.signal(signal.SIGTERM, _exit_on_signal)  # as in `profiled`
    handle._run = timed_run  # type: ignore[method-assign]
    try:
        yield
    finally:
        handle._run = run  # type: ignore[method-assign]
        Path(path).write_text(json.dumps(log.summary(), indent=1))
        signal.signal(signal.SIGTERM, previous)
