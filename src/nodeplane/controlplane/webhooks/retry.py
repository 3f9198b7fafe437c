"""When a failed delivery is tried again: exponential backoff with jitter, for a bounded window.

Attempt n (1-based) failing waits `base * 2**(n-1)` seconds, capped at `max_delay`, times a
random factor in [0.5, 1) so that deliveries failing together do not come back together. A
series stops (the delivery is marked failed) once the next attempt would start past `window`
after the series began: with the defaults (10 s base, 15 min cap, one hour) that is about ten
attempts.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

# Jitter needs no secrecy; one generator for the process.
_JITTER = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """The backoff schedule of one delivery series."""

    base_seconds: float = 10.0
    max_delay_seconds: float = 15 * 60.0
    window_seconds: float = 60 * 60.0

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `failed_attempts`-th failure of a series."""
        exponent = max(0, failed_attempts - 1)
        full = min(self.max_delay_seconds, self.base_seconds * (1 << min(exponent, 30)))
        return full * (0.5 + 0.5 * (rng or _JITTER).random())

    def next_attempt(
        self,
        failed_attempts: int,
        series_started_at: datetime,
        now: datetime,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again, or None when the series has used its window."""
        when = now + timedelta(seconds=self.delay(failed_attempts, rng))
        if when > series_started_at + timedelta(seconds=self.window_seconds):
            return None
        return when
