"""Read sessions on PostgreSQL: READ ONLY transactions ended by COMMIT.

psycopg forgets what it prepared on a connection at every ROLLBACK (and sends DEALLOCATE ALL),
so reads that ended that way left the pool's connections with little prepared, and PostgreSQL
parsed and planned most statements anew (issue 8, docs/benchmarks.md). A read
session now commits its READ ONLY transaction: what was prepared stays, and a write in it is
refused rather than committed.
"""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from nodeplane.controlplane.store.database import Database
from tests.conftest import new_database_url
from tests.support.server import drop_pg_database

# psycopg prepares a statement once it has run it this many times on one connection.
PREPARE_THRESHOLD = 5


async def _prepared_after_reads(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        # One session at a time: the pool hands out its one connection every time.
        for i in range(PREPARE_THRESHOLD + 3):
            async with db.read() as session:
                await session.execute(text("SELECT CAST(:x AS int) + 1"), {"x": i})
        async with db.read() as session:
            prepared = await session.scalar(
                text("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql")
            )
        return int(prepared or 0), db.engine.pool.checkedout()
    finally:
        await db.close()


def test_statements_prepared_in_reads_stay_prepared(pg_url: str) -> None:
    prepared, checked_out = asyncio.run(_prepared_after_reads(pg_url))
    assert prepared >= 1, "every read's ROLLBACK made psycopg deallocate what it had prepared"
    assert checked_out == 0


async def _one_row_table(db: Database) -> None:
    async with db.write() as uow:
        await uow.session.execute(text("CREATE TABLE t (id int PRIMARY KEY, n int)"))
        await uow.session.execute(text("INSERT INTO t VALUES (1, 0)"))


async def _write_in_read(url: str) -> dict[str, object]:
    db = Database(url)
    try:
        await _one_row_table(db)
        refused = None
        try:
            async with db.read() as session:
                await session.execute(text("UPDATE t SET n = 7 WHERE id = 1"))
        except DBAPIError as error:
            refused = type(error.orig).__name__
        # The connection the read used serves writes again (READ WRITE restored on return).
        async with db.write() as uow:
            await uow.session.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))
        async with db.read() as session:
            n = await session.scalar(text("SELECT n FROM t WHERE id = 1"))
        return {"refused": refused, "n": n, "checked_out": db.engine.pool.checkedout()}
    finally:
        await db.close()


def test_a_write_in_a_read_session_is_refused_and_nothing_is_committed(pg_url: str) -> None:
    got = asyncio.run(_write_in_read(pg_url))
    assert got == {"refused": "ReadOnlySqlTransaction", "n": 1, "checked_out": 0}


async def _reads_see_what_was_committed(url: str) -> list[int]:
    db = Database(url)
    seen: list[int] = []
    try:
        await _one_row_table(db)
        for _ in range(PREPARE_THRESHOLD + 3):
            async with db.write() as uow:
                await uow.session.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))
            async with db.read() as session:
                seen.append(int(await session.scalar(text("SELECT n FROM t WHERE id = 1")) or 0))
        return seen
    finally:
        await db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_reads_see_each_committed_write(backend: str, tmp_path: Path) -> None:
    url = new_database_url(backend, tmp_path)
    try:
        assert asyncio.run(_reads_see_what_was_committed(url)) == list(
            range(1, PREPARE_THRESHOLD + 4)
        )
    finally:
        if backend == "postgresql":
            drop_pg_database(url)
