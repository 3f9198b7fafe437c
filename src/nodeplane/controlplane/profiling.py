"""An optional cProfile of the server process, for benchmarks; off unless asked for.

`NODEPLANE_PROFILE=/path/file.pstats` makes `nodeplane server` profile its main thread (the event
loop, where requests are handled) and write the statistics when it exits. cProfile roughly
doubles the cost of Python calls, so benchmarks measure without it and profile in a run of
their own. Work in other threads (aiosqlite runs SQLite in one) appears only as waiting.
"""

import cProfile
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PROFILE_ENV = "NODEPLANE_PROFILE"


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
