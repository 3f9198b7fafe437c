"""Quiet outages: retries that back off with jitter, and one log line per change of reachability.

While the control plane is away the executor keeps its nodes as they are and retries its calls
(heartbeat, spec poll, event reports). Retrying on a fixed short cadence would log a warning per
attempt (dozens a minute) and have every executor of a fleet knock at the same instants when the
control plane returns; instead each loop backs off exponentially with *full jitter* (a uniform
delay between 0 and the exponential bound, capped), and the log says once that the control plane
became unreachable (with the error) and once that it answers again (with how long it was away).
"""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)


@dataclass
class JitteredBackoff:
    """Delays `uniform(0, min(cap, base * 2**attempt))`, attempt counting failures in a row."""

    base: float
    cap: float
    rng: Callable[[], float] = field(default=random.random)  # in [0, 1)
    attempt: int = 0

    def next_delay(self, hint: float | None = None) -> float:
        """How long to wait before the next try; counts one more failure. `hint` is the
        control plane's own `retryAfterSeconds` (busy): the wait is then at least that, spread
        over `hint .. 2 * hint`, so executors refused together do not come back together. A
        hint longer than `cap` counts as `cap`: a control plane that asks for an hour would
        otherwise have its executors silent, and shown offline, for as long."""
        bound: float = min(self.cap, self.base * 2.0 ** min(self.attempt, 62))
        self.attempt += 1
        delay = bound * self.rng()
        if hint is not None:
            delay = max(delay, min(hint, self.cap) * (1.0 + self.rng()))
        return delay

    def reset(self) -> None:
        """A try succeeded: the next failure waits little again."""
        self.attempt = 0


@dataclass
class Reachability:
    """Whether the control plane answers; logs only when that changes.

    `reachable` is None until the first call's outcome is known. Every loop that calls the
    control plane reports each outcome here; a failure while already unreachable and a success
    while reachable log nothing.
    """

    clock: Callable[[], float] = time.monotonic
    reachable: bool | None = None
    since: float | None = None  # when it became unreachable
    failures: int = 0  # failed calls during the current outage

    def failed(self, call: str, error: str) -> None:
        """A call (`sync`, `poll`, `report_events`, ...) could not reach the control plane."""
        self.failures += 1
        if self.reachable is False:
            return
        self.reachable, self.since = False, self.clock()
        log.warning("controlplane.unreachable", call=call, error=error)

    def succeeded(self, started: float | None = None) -> None:
        """A call got an answer; `started` is when it was sent (this object's clock).

        An answer to a call sent before the outage was noticed says nothing about now: a control
        plane shutting down answers the requests it already had while refusing new ones, and
        counting such an answer would log the outage twice within milliseconds.
        """
        if (
            self.reachable is False
            and started is not None
            and self.since is not None
            and started < self.since
        ):
            return
        if self.reachable is False:
            away = self.clock() - (self.since if self.since is not None else self.clock())
            log.info(
                "controlplane.reachable", after_seconds=round(away, 1), failed_calls=self.failures
            )
        self.reachable, self.since, self.failures = True, None, 0
