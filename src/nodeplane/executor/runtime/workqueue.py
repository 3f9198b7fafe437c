"""A work queue in the shape of client-go's (controller-runtime's): keys, not events.

The runtime puts a node's id in the queue whenever something about the node may need doing (a
spec arrived, a periodic resync, a retry after a failure); a worker takes the key, reconciles the
node from what is held and materialized *now*, and says `done`. The queue guarantees:

- a key waits in the queue at most once, however often it is added (`add` dedupes);
- a key is never handed out twice at once: added again while it is being processed, it is marked
  *dirty* and handed out again after `done` (so the change that re-added it is not lost);
- `add_after` holds a key back for a while (only the earliest pending time counts);
- `add_rate_limited` holds it back by a per-key exponential backoff, which `forget` resets.

Everything runs on one asyncio event loop; the queue is not thread-safe.
"""

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """The queue was shut down and holds nothing more to hand out."""


@dataclass
class ExponentialBackoff(Generic[K]):
    """Per-key delays `base * 2**failures`, capped at `cap` (client-go's item failure limiter)."""

    base: float = 0.5
    cap: float = 60.0
    _failures: dict[K, int] = field(default_factory=dict)

    def when(self, key: K) -> float:
        """The delay before `key`'s next try; each call counts one more failure."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        # min() before the power would overflow for a key failing for days: bound the exponent.
        delay: float = self.base * 2.0 ** min(failures, 62)
        return min(delay, self.cap)

    def forget(self, key: K) -> None:
        """`key` succeeded: its next failure starts from `base` again."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        """How many failures in a row `key` has had."""
        return self._failures.get(key, 0)


class WorkQueue(Generic[K]):
    """Deduplicating, per-key serialized, delaying and rate-limited queue of keys."""

    def __init__(self, backoff: ExponentialBackoff[K] | None = None) -> None:
        self.backoff: ExponentialBackoff[K] = backoff or ExponentialBackoff()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # waiting to be handed out (in _queue or held by processing)
        self._processing: set[K] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._delayed: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._shutting_down = False

    def __len__(self) -> int:
        """Keys ready to be handed out now."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        """Whether `shutdown` was called."""
        return self._shutting_down

    def processing(self, key: K) -> bool:
        """Whether a worker holds `key` now (between `get` and `done`)."""
        return key in self._processing

    def waiting(self, key: K) -> bool:
        """Whether `key` is queued, dirty or held back by `add_after`/`add_rate_limited`."""
        return key in self._dirty or key in self._delayed

    def add(self, key: K) -> None:
        """Queue `key` unless it is queued already; if it is being processed, run it again after."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # `done` queues it again
        self._queue.append(key)
        self._wake_one()

    async def get(self) -> K:
        """The next key; the caller must call `done(key)` when finished with it.

        Raises QueueShutDown once the queue is shut down and empty.
        """
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)  # never leave a dead waiter to be woken
                elif waiter.done() and not waiter.cancelled() and self._queue:
                    self._wake_one()  # woken, then cancelled: pass the wake-up on
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        if self._queue:
            self._wake_one()  # more is ready: another worker may take it
        return key

    def done(self, key: K) -> None:
        """The worker finished `key`; if it was added meanwhile, it is queued again now."""
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        """Add `key` after `delay` seconds; an earlier pending time for the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        ready_at = loop.time() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= ready_at:
                return
            pending[1].cancel()
        self._delayed[key] = (ready_at, loop.call_at(ready_at, self._ready, key))

    def _ready(self, key: K) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: K) -> None:
        """Add `key` after its backoff (one more failure counted)."""
        self.add_after(key, self.backoff.when(key))

    def forget(self, key: K) -> None:
        """Reset `key`'s backoff (it succeeded, or its failures are moot)."""
        self.backoff.forget(key)

    def num_requeues(self, key: K) -> int:
        """Failures in a row counted for `key` since it was last forgotten."""
        return self.backoff.failures(key)

    def shutdown(self) -> None:
        """Accept no more keys; `get` hands out what is queued, then raises QueueShutDown."""
        self._shutting_down = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
