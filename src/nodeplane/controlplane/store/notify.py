"""Wake-ups for held spec polls: in-process, fed by PostgreSQL LISTEN when on PostgreSQL."""

import asyncio
import contextlib
from collections import defaultdict

import psycopg
import structlog

SPEC_CHANNEL = "nodeplane_specs"

log = structlog.get_logger(__name__)


class ChangeNotifier:
    """Lets long-polls wait for a change to an executor's specs without missing one."""

    def __init__(self, listen_conninfo: str | None) -> None:
        self._conninfo = listen_conninfo
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.closing = False

    async def start(self) -> None:
        """Begin listening on PostgreSQL; returns once LISTEN is in place."""
        if self._conninfo is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._listen_forever(), name="nodeplane-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=10)

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, key: str) -> asyncio.Event:
        """Register interest in `key` before reading state, so no change slips between."""
        waiter = asyncio.Event()
        if self.closing:
            waiter.set()
        self._waiters[key].add(waiter)
        return waiter

    def close_all(self) -> None:
        """Shutting down: wake every waiter now and every later one at once."""
        self.closing = True
        self._wake_all()

    def unsubscribe(self, key: str, waiter: asyncio.Event) -> None:
        """Drop a waiter registered with `subscribe`."""
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]

    def publish_local(self, key: str) -> None:
        """Wake every waiter on `key` in this process."""
        for waiter in self._waiters.get(key, ()):
            waiter.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()

    async def _listen_forever(self) -> None:
        assert self._conninfo is not None
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {SPEC_CHANNEL}")
                    self._listening.set()
                    # Anything committed while we were not listening: let every poll re-read.
                    self._wake_all()
                    backoff = 0.5
                    async for notice in conn.notifies():
                        self.publish_local(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on any connection failure
                log.warning("listen.failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
