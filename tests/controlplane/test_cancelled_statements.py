"""A request is cancelled wherever it is when its time budget runs out: in a checkout, a
statement, a commit. Whatever was interrupted, the pool gets every connection back, none of
them in a state that would answer the next caller wrongly, and the data stays as if the
cancelled work never ran."""

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from nodeplane.controlplane.store.database import Database

SWEEP = 14  # event-loop turns after which a task is cancelled: past every await of one read


class PoolComplaints(logging.Handler):
    """Collects SQLAlchemy's complaints about connections it had to find by garbage collection."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "garbage collector" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture(name="pool_complaints")
def pool_complaints_fixture() -> Iterator[PoolComplaints]:
    handler = PoolComplaints()
    logger = logging.getLogger("sqlalchemy.pool")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def cancel_after(turns: int, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work`, cancelling it after `turns` turns of the event loop (if still running)."""
    # psycopg yields to the loop inside calls that need no I/O (switching autocommit) only when
    # it has not for a few milliseconds: make sure each of those awaits is there to land on.
    await asyncio.sleep(0.01)
    task = asyncio.ensure_future(work())
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _pg_storm(url: str) -> dict[str, object]:
    db = Database(url)
    try:
        async with db.write() as uow:
            await uow.session.execute(text("CREATE TABLE t (id int PRIMARY KEY, n int)"))
            await uow.session.execute(text("INSERT INTO t VALUES (1, 0)"))

        async def quick() -> None:
            async with db.quick_read() as session:
                await session.execute(text("SELECT pg_sleep(0.001), 1"))

        async def read() -> None:
            async with db.read() as session:
                await session.execute(text("SELECT 1"))
                await session.execute(text("SELECT pg_sleep(0.001)"))

        async def write() -> None:
            async with db.write() as uow:
                await uow.session.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))
                await uow.session.execute(text("SELECT pg_sleep(0.001)"))
                await uow.session.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))

        for _ in range(3):
            for turns in range(SWEEP):
                for work in (quick, read, write):
                    await cancel_after(turns, work)
        # Cancelled at random points too, many at once.
        await asyncio.gather(
            *(
                cancel_after(random.randrange(SWEEP), random.choice((quick, read, write)))
                for _ in range(60)
            )
        )
        checked_out_after = db.engine.pool.checkedout()

        # Every pooled connection answers its own statement, and the transactional sessions
        # really are transactions (no connection went back to the pool in autocommit).
        async def echo(x: int) -> tuple[int, bool]:
            async with db.read() as session:
                got = (await session.execute(text("SELECT CAST(:x AS int)"), {"x": x})).scalar()
                first = (await session.execute(text("SELECT now()"))).scalar()
                await session.execute(text("SELECT pg_sleep(0.01)"))
                again = (await session.execute(text("SELECT now()"))).scalar()
                return int(got or 0), first == again

        echoes = await asyncio.gather(*(echo(x) for x in range(60)))
        quick_echoes = []
        for x in range(20):
            async with db.quick_read() as session:
                quick_echoes.append(
                    (await session.execute(text("SELECT CAST(:x AS int)"), {"x": x})).scalar()
                )
        # Each completed write added 2 and each cancelled one nothing: the count is even.
        async with db.read() as session:
            n = (await session.execute(text("SELECT n FROM t WHERE id = 1"))).scalar()
        # Nothing the pool ran is still running on the server once the pool is idle.
        active: list[str] = []
        for _ in range(100):
            async with db.quick_read() as session:
                active = list(
                    (
                        await session.execute(
                            text(
                                "SELECT query FROM pg_stat_activity WHERE datname = "
                                "current_database() AND pid <> pg_backend_pid() "
                                "AND state <> 'idle'"
                            )
                        )
                    ).scalars()
                )
            if not active:
                break
            await asyncio.sleep(0.1)
        return {
            "checked_out_after": checked_out_after,
            "echoes": echoes,
            "quick_echoes": quick_echoes,
            "n": n,
            "active": active,
        }
    finally:
        await db.close()


@pytest.mark.server
def test_postgresql_connections_survive_cancellation_anywhere(
    pg_url: str, pool_complaints: PoolComplaints
) -> None:
    found = asyncio.run(_pg_storm(pg_url))
    gc.collect()  # whatever the pool could not get back, SQLAlchemy now complains about
    assert pool_complaints.messages == []
    assert found["checked_out_after"] == 0
    assert found["echoes"] == [(x, True) for x in range(60)]
    assert found["quick_echoes"] == list(range(20))
    assert isinstance(found["n"], int) and found["n"] % 2 == 0
    assert found["active"] == []


async def _sqlite_cancelled_writes(url: str) -> dict[str, object]:
    db = Database(url)
    try:
        async with db.write() as uow:
            await uow.session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))

        async def interrupted(statement: str) -> None:
            async with db.write() as uow:
                await uow.session.execute(text("INSERT INTO t (v) VALUES ('cancelled')"))
                await uow.session.execute(text(statement))
                await asyncio.sleep(30)

        # Cancelled between statements, and in the middle of a long statement.
        slow = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) "
            "SELECT count(*) FROM c"
        )
        outcomes = []
        for statement in ("SELECT 1", slow):
            try:
                async with asyncio.timeout(0.3):
                    await interrupted(statement)
            except TimeoutError:
                outcomes.append("cancelled")
            outcomes.append("locked" if db._write_lock and db._write_lock.locked() else "free")
            # The next writer goes ahead (generous bound: a stuck lock would hang for good).
            async with asyncio.timeout(30):
                async with db.write() as uow:
                    await uow.session.execute(text("INSERT INTO t (v) VALUES ('kept')"))
        async with db.read() as session:
            rows = list((await session.execute(text("SELECT v FROM t ORDER BY id"))).scalars())
        return {"outcomes": outcomes, "rows": rows, "checked_out": db.engine.pool.checkedout()}
    finally:
        await db.close()


@pytest.mark.xfail(
    strict=False,  # it depends on where the cancellation lands: some runs pass
    reason="open: a write cancelled on SQLite can leave the database locked for the next writer "
    "(aiosqlite's thread keeps the cancelled transaction going); fails before and after the "
    "PostgreSQL fix",
)
def test_sqlite_cancelled_write_rolls_back_and_frees_the_write_lock(
    tmp_path: Path, pool_complaints: PoolComplaints
) -> None:
    found = asyncio.run(_sqlite_cancelled_writes(f"sqlite:///{tmp_path / 'np.db'}"))
    gc.collect()
    assert found["outcomes"] == ["cancelled", "free", "cancelled", "free"]
    assert found["rows"] == ["kept", "kept"]
    assert found["checked_out"] == 0
    assert pool_complaints.messages == []
