"""Admission of costly calls: a bounded number at a time, a short line, and early refusals.

A fleet's start sends every executor's first sync within one heartbeat interval, and each is a
write: its key's first use, its nodes' first observations, their events. So does a control
plane that comes back to a fleet whose nodes changed while it was away. Unbounded, every such
write in flight interleaves with the others on the one event loop and each takes as long as all
of them together. Past the executors' request timeout the server goes on working for callers
that have given up and are sending again, and the start is absorbed late or not at all
(docs/benchmarks.md, two workers at 2,000 executors: 226 syncs past their time budget, and the
start never absorbed). The fleet's repeated heartbeats, which cost little, wait behind all of
it.

Bounded, as Kubernetes' API priority and fairness and Envoy's admission control bound theirs: at
most `limit` such calls run at once, the others wait their turn in arrival order for at most
`max_wait` seconds, and a call that would wait longer is refused at once, before any work is
done for it, with `unavailable` and a hint of when to come back. Its executor sends again after
its backoff, and no work is spent on a caller that has stopped waiting. A repeated heartbeat
(answered from memory) and one whose metric values alone moved (stored in batches) do not queue
here, so a running fleet keeps its cadence while a start is absorbed.
"""

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from nodeplane.controlplane.errors import server_busy

# Weight of the latest call in the running mean of how long a call holds its place.
_SMOOTHING = 0.2
# Seconds over which a refusal counts toward the callers still to come back: a refused caller
# comes back after its hint, so those refused lately are a line outside the server.
REFUSAL_MEMORY = 10.0
# The longest retry hint: an agent's outage backoff reaches about this much too.
MAX_RETRY_AFTER = 30


class Admission:
    """At most `limit` calls at once; a later one waits in line up to `max_wait` seconds or is
    refused (`unavailable`, with `retryAfterSeconds`) when its wait would be longer."""

    def __init__(
        self,
        limit: int,
        max_wait: float,
        *,
        on_refusal: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_wait = max_wait
        self._clock = clock
        self._running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        # Seconds a call has held its place, as a running mean; None until one has.
        self._held: float | None = None
        self._on_refusal = on_refusal
        # Callers refused lately, decaying over REFUSAL_MEMORY seconds, and when last counted.
        self._refused = 0.0
        self._refused_at = clock()

    @property
    def running(self) -> int:
        """Calls holding a place now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Calls waiting in line now."""
        return len(self._waiting)

    def expected_wait(self) -> float:
        """How long a call arriving now would wait: the line ahead of it, `limit` at a time,
        each as long as calls have lately held their place."""
        if self._running < self.limit and not self._waiting:
            return 0.0
        return (len(self._waiting) + 1) * (self._held or 0.0) / self.limit

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold one of the `limit` places for the block; raises `server_busy` instead when the
        wait would be, or has become, longer than `max_wait`."""
        await self._enter()
        started = self._clock()
        try:
            yield
        finally:
            held = self._clock() - started
            self._held = (
                held if self._held is None else self._held + _SMOOTHING * (held - self._held)
            )
            self._leave()

    async def _enter(self) -> None:
        if self._running < self.limit and not self._waiting:
            self._running += 1
            return
        expected = self.expected_wait()
        if expected > self.max_wait:
            raise self._refusal()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(self.max_wait):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                # The place was handed over as the wait ended: hand it on.
                self._leave()
            elif turn in self._waiting:  # not yet passed over by a `_leave`
                self._waiting.remove(turn)
            if isinstance(exc, TimeoutError):
                raise self._refusal() from None
            raise

    def _leave(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes to the next in line
                return
        self._running -= 1

    def retry_after(self) -> int:
        """When a refused caller should come back, in whole seconds: once the line and the
        callers refused lately (who come back too) have had their turns, `limit` at a time.
        Telling each refused caller "in a second" while hundreds were refused would bring them
        all back at once, and refusing them again would take the time the admitted need."""
        self._decay()
        ahead = self.waiting + self._refused
        return max(1, min(MAX_RETRY_AFTER, math.ceil(ahead * (self._held or 0.0) / self.limit)))

    def _decay(self) -> None:
        now = self._clock()
        self._refused *= math.exp(-(now - self._refused_at) / REFUSAL_MEMORY)
        self._refused_at = now

    def _refusal(self) -> Exception:
        if self._on_refusal is not None:
            self._on_refusal()
        self._decay()
        self._refused += 1.0  # this caller too will come back
        return server_busy(self.retry_after())
