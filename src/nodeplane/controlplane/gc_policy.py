"""When the cyclic garbage collector runs in the server process.

CPython's collector stops the event loop while it runs, and a full (generation 2) pass takes
time in proportion to every live object: with a few hundred executors connected, 100 to 200 ms,
triggered every few seconds by held spec polls that live long enough to be promoted. Each such
pause made every request arriving meanwhile wait, and set the p99 of syncExecutor under load
(docs/benchmarks.md). Reference counting frees almost everything the server makes (requests no
longer form cycles, api/schema.py), so full passes are rare here and at a fixed interval
instead, where a pause is one event in minutes rather than one every few seconds; the young
generations are still collected as usual. The objects made at start-up (modules, the schema,
the ORM's mappings) are frozen out of every pass.
"""

import gc
import time

# Young-generation thresholds as CPython's defaults; full passes never triggered by counts.
THRESHOLDS = (700, 10, 1_000_000_000)
FULL_COLLECTION_INTERVAL_S = 600.0


def settle_after_startup() -> None:
    """Collect once, freeze what start-up made, and switch to interval-driven full passes."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


class FullCollections:
    """Runs a full collection when `FULL_COLLECTION_INTERVAL_S` has passed since the last one."""

    def __init__(self, interval: float = FULL_COLLECTION_INTERVAL_S) -> None:
        self.interval = interval
        self._next = time.monotonic() + interval

    def maybe_collect(self) -> int | None:
        """Collect if due; returns the number of objects freed, or None when not due."""
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.interval
        return gc.collect()
