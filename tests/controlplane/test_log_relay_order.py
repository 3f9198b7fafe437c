"""A viewer gets its executor's live-log lines in the order the executor posted them, whichever
control-plane process each post reached: two processes' relays (each a `Database` with its own
LISTEN connection) on one PostgreSQL database, the viewer on the first. Seen in the full suite:
a line posted to the other process arrived after the next one, posted to the viewer's own."""

import asyncio
import time
import uuid
from collections.abc import Callable

import pytest

from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.log_relay import LogViewer, OpenSession
from nodeplane.protocol.logs import LogChunk, LogLevel, LogLine, LogSessionRequest

pytestmark = pytest.mark.server


async def _until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _lines_of(viewer: LogViewer, count: int) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        for event in viewer.take():
            got.extend(text for _, text in event.lines)
        await asyncio.sleep(0.01)
    return got


async def _alternating_posts(url: str) -> list[str]:
    here, there = Database(url), Database(url)
    await here.start()
    await there.start()
    try:
        executor_id = uuid.uuid4()
        request = LogSessionRequest(session_id=uuid.uuid4(), node_id=uuid.uuid4(), role="node")
        viewer = await here.logs.open(OpenSession(request, uuid.uuid4(), executor_id))
        await _until(lambda: request.session_id in there.logs.sessions, "the announcement")
        for n in range(20):
            # Each post is answered before the next is sent, as an executor posts a session's
            # chunks; even ones reach the other process, odd ones the viewer's own.
            relay = (there if n % 2 == 0 else here).logs
            chunk = LogChunk(
                session_id=request.session_id, lines=[LogLine(level=LogLevel.INFO, text=f"{n}")]
            )
            assert await relay.deliver(executor_id, chunk)
        return await _lines_of(viewer, 20)
    finally:
        await there.close()
        await here.close()


def test_lines_keep_their_order_across_processes(pg_url: str) -> None:
    assert asyncio.run(_alternating_posts(pg_url)) == [f"{n}" for n in range(20)]
