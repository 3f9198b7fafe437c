"""Engines, sessions and units of work over SQLite (default) or PostgreSQL."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog
from psycopg import sql
from sqlalchemy import event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from nodeplane.controlplane.store.key_cache import KeyCache
from nodeplane.controlplane.store.log_relay import LogRelay
from nodeplane.controlplane.store.notify import (
    KEYS_CHANNEL,
    LOGS_CHANNEL,
    NODES_CHANNEL,
    SPEC_CHANNEL,
    ChangeNotifier,
    Notice,
    nodes_payloads,
)
from nodeplane.controlplane.store.seen_times import SeenTimes, write_times
from nodeplane.controlplane.store.sync_looks import OwnChanges

log = structlog.get_logger(__name__)

# Connections kept open, and opened beyond that under a burst (closed again when returned).
# With SQLAlchemy's default (5, and 10 more in a burst), a fleet of a few hundred executors
# starting at once had all fifteen checked out and calls queued for a connection for seconds
# (docs/benchmarks.md); PostgreSQL's default of 100 connections leaves room for two workers.
POOL_SIZE = 20
POOL_OVERFLOW = 20

# A pooled PostgreSQL connection idle longer than this is pinged before use. Pinging every
# checkout (pool_pre_ping) cost a round trip per session, a quarter of a spec poll's CPU; a
# connection used moments ago is alive, or the failure that killed it also failed the request
# using it, and SQLAlchemy then renews every pooled connection (docs/benchmarks.md).
IDLE_PING_SECONDS = 2.0

# How often the times executors were heard from are written (store/seen_times.py): the most an
# executor's lastSyncAt lags, and the most a crash of this process loses.
SEEN_FLUSH_SECONDS = 1.0

# The longest a session's close (its rollback) may take before its connection is dropped
# instead: a server that stopped answering must not hold a pool slot, or a caller, for good.
CLOSE_SECONDS = 5.0

# How long a statement waits for SQLite's one write lock (held by another process) by default.
SQLITE_BUSY_TIMEOUT_MS = 10000


def _driver_url(url: str, *, asynchronous: bool) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite"))
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def sync_url(url: str) -> str:
    """The URL with the synchronous driver, for migrations."""
    return _driver_url(url, asynchronous=False)


def libpq_conninfo(url: str) -> str:
    """A plain postgresql:// URL for psycopg's own connections (LISTEN)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return on_connect


def dialect_insert(session: AsyncSession, model: type[Any]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, for the session's database (both spell it alike)."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Before a pooled connection is used, ping it if it sat idle over `idle_seconds`; a dead
    one is replaced (the pool retries the checkout on DisconnectionError)."""
    dialect = engine.sync_engine.dialect

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return  # just connected, or used moments ago
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error
        if not alive:
            raise exc.DisconnectionError("pooled connection failed its ping")

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


# The pooled connections checked out while a session of `Database` is open, so that one its
# session never came to hold can still be given back (see `_track_checkouts`).
_checked_out: ContextVar[list[PoolProxiedConnection] | None] = ContextVar(
    "nodeplane_checked_out", default=None
)


def _track_checkouts(engine: AsyncEngine) -> None:
    """Note each connection checked out inside a session of `Database` (`_checked_out`).

    A quick read's session switches its connection to autocommit right after the checkout,
    inside SQLAlchemy's Connection constructor, and psycopg yields to the event loop there; a
    cancellation landing on that yield leaves the connection checked out with nobody holding it
    (the session never saw it). SQLAlchemy gives it back only when the garbage collector finds
    it, and until then it is one connection fewer in the pool: a cancelled burst emptied it.
    Registered after `ping_when_idle`, so a connection noted here has passed its checkout."""

    def checkout(_dbapi_connection: Any, _record: Any, proxy: PoolProxiedConnection) -> None:
        held = _checked_out.get()
        if held is not None:
            held.append(proxy)

    event.listen(engine.sync_engine, "checkout", checkout)


def _interrupted(error: BaseException) -> bool:
    """True for a cancellation (or an interpreter exit) rather than an error of the work."""
    return not isinstance(error, Exception)


@dataclass
class UnitOfWork:
    """One write transaction plus the executors whose spec polls must be woken after it commits,
    and the nodes (per organization) whose row on an open nodes page it changes."""

    session: AsyncSession
    wake_executors: set[UUID] = field(default_factory=set)
    changed_executors: set[UUID] = field(default_factory=set)
    changed_nodes: dict[UUID, set[UUID]] = field(default_factory=dict)
    changed_keys: set[UUID] = field(default_factory=set)
    held: list[object] = field(default_factory=list)

    def hold(self, row: object) -> None:
        """Keep `row` (read in this transaction) alive until the transaction ends: the session's
        identity map holds rows weakly, and a later step that finds it there spares a SELECT."""
        self.held.append(row)

    def wake(self, executor_id: UUID) -> None:
        """Wake the executor's held spec polls once this transaction commits."""
        self.wake_executors.add(executor_id)

    def executor_changed(self, executor_id: UUID) -> None:
        """The executor's row may change in this transaction: every process forgets what steady
        syncs read of it once it commits (store/sync_looks.py)."""
        self.changed_executors.add(executor_id)

    def keys_changed(self, key_ids: Iterable[UUID]) -> None:
        """These API keys change in this transaction (revoked, bound, rebound): every process
        forgets what it cached of them once it commits (store/key_cache.py)."""
        self.changed_keys.update(key_ids)

    def nodes_changed(self, organization_id: UUID, node_ids: Iterable[UUID]) -> None:
        """Push these nodes' rows to the open nodes pages once this transaction commits."""
        self.changed_nodes.setdefault(organization_id, set()).update(node_ids)


def _notices(uow: UnitOfWork) -> list[tuple[str, str]]:
    """What `uow` changed, as the notices (channel, payload) its commit sends to every process."""
    notices = [(SPEC_CHANNEL, str(executor_id)) for executor_id in sorted(uow.wake_executors)]
    notices += [(SPEC_CHANNEL, f"{e}/sync") for e in sorted(uow.changed_executors)]
    notices += [
        (NODES_CHANNEL, payload)
        for organization_id, node_ids in uow.changed_nodes.items()
        for payload in nodes_payloads(organization_id, node_ids)
    ]
    if uow.changed_keys:
        # Under 8,000 bytes whatever the count: past 200 ids, an empty payload (forget all).
        ids = sorted(str(k) for k in uow.changed_keys)
        notices.append((KEYS_CHANNEL, ",".join(ids) if len(ids) <= 200 else ""))
    return notices


async def _notify_and_commit(session: AsyncSession, notices: list[tuple[str, str]]) -> None:
    """NOTIFY `notices` and COMMIT in one round trip: one simple-protocol query of two
    statements (NOTIFY is transactional: delivered to every process on commit). Apart, they
    were two of a lifecycle action's eleven round trips and of a moved sync's seven, each
    waiting its turn on a busy event loop. What the session holds is flushed first; the
    session's own commit that follows finds the transaction ended and sends nothing (psycopg
    commits only an open one). Channels and payloads are ours (ids), quoted as literals all
    the same, since the simple protocol takes no parameters."""
    await session.flush()
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    calls = sql.SQL(", ").join(
        sql.SQL("pg_notify({}, {})").format(sql.Literal(channel), sql.Literal(payload))
        for channel, payload in notices
    )
    statement = sql.SQL("SELECT {}; COMMIT").format(calls).as_string(driver)
    # No parameters: SQLAlchemy passes none to psycopg, which then sends the simple protocol.
    await connection.exec_driver_sql(statement, execution_options={"no_parameters": True})


async def _backend_pid(session: AsyncSession) -> int:
    """The process id of the PostgreSQL backend serving `session`'s transaction."""
    raw = await (await session.connection()).get_raw_connection()
    pid: int = raw.driver_connection.info.backend_pid  # type: ignore[union-attr]
    return pid


class Database:
    """The control plane's database: async engine, read sessions and write units of work."""

    def __init__(
        self,
        url: str,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        seen_flush_seconds: float = SEEN_FLUSH_SECONDS,
    ) -> None:
        """`sqlite_busy_timeout_ms`: how long an SQLite statement waits for the write lock; a
        statement stuck there cannot be cancelled, so it should not outlast a request.
        `seen_flush_seconds`: how often heard-from times are written (`seen`)."""
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.engine: AsyncEngine = create_async_engine(
            _driver_url(url, asynchronous=True),
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
        )
        if self.dialect == "postgresql":
            ping_when_idle(self.engine, IDLE_PING_SECONDS)
        _track_checkouts(self.engine)
        if self.dialect == "sqlite":
            event.listen(
                self.engine.sync_engine, "connect", _sqlite_pragmas(sqlite_busy_timeout_ms)
            )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads on PostgreSQL run in READ ONLY transactions, which `read` ends with a COMMIT
        # (see there); on SQLite they are plain ones, rolled back.
        self._read_sessions = (
            async_sessionmaker(
                self.engine.execution_options(postgresql_readonly=True),
                expire_on_commit=False,
            )
            if self.dialect == "postgresql"
            else self._sessions
        )
        # Statements on their own, without BEGIN and ROLLBACK: two round trips fewer for the
        # reads executors make every few seconds (the pool is shared; see `quick_read`).
        self._quick_sessions = (
            async_sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False,
            )
            if self.dialect == "postgresql"
            else self._sessions
        )
        # SQLite has one writer at a time; serializing writes in-process avoids SQLITE_BUSY on
        # lock upgrades. PostgreSQL relies on row conditions and constraints instead.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.notifier = ChangeNotifier(
            libpq_conninfo(url) if self.dialect == "postgresql" else None
        )
        # Open live-log sessions and their lines, between this process and the others.
        self.logs = LogRelay(
            self.notifier, self._notify_logs if self.dialect == "postgresql" else None
        )
        # Heartbeat, report and key-use times, written behind the requests (seen_times.py).
        self.seen = SeenTimes()
        # Executor keys' principals between requests (key_cache.py); on PostgreSQL only while
        # LISTEN is up, since evictions from other processes arrive that way.
        self.key_cache: KeyCache[Any] = KeyCache(
            usable=(lambda: self.notifier.connected)
            if self.dialect == "postgresql"
            else (lambda: True)
        )
        self.notifier.on_keys(self._keys_changed)
        self.notifier.on_listening(self.key_cache.clear)
        self._seen_flush_seconds = seen_flush_seconds
        self._seen_flusher: asyncio.Task[None] | None = None

    def _keys_changed(self, key_ids: list[UUID]) -> None:
        if key_ids:
            self.key_cache.evict(key_ids)
        else:
            self.key_cache.clear()

    @property
    def is_postgresql(self) -> bool:
        """True when running on PostgreSQL."""
        return self.dialect == "postgresql"

    async def start(self) -> None:
        """Start background listeners (PostgreSQL LISTEN) and the writer of heard-from times."""
        await self.notifier.start()
        self.logs.start()
        if self._seen_flusher is None:
            self._seen_flusher = asyncio.create_task(
                self._flush_seen_forever(), name="nodeplane-seen-times"
            )

    async def close(self) -> None:
        """Write the heard-from times held, stop listeners and dispose of the pool."""
        if self._seen_flusher is not None:
            self._seen_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._seen_flusher
            self._seen_flusher = None
        try:
            await self.flush_seen()
        except Exception as error:  # the database is gone: at most one interval is lost
            log.warning("seen_times.final_flush_failed", error=str(error)[:200])
        await self.logs.stop()
        await self.notifier.stop()
        await self.engine.dispose()

    async def _notify_logs(self, payload: str) -> None:
        """NOTIFY a live-log message to every process, at once (outside any transaction)."""
        async with self.quick_read() as session:
            await session.execute(
                text("SELECT pg_notify(:c, :p)"), {"c": LOGS_CHANNEL, "p": payload}
            )

    async def flush_seen(self) -> int:
        """Write the heard-from times held now; returns how many rows were pending. On failure
        they are kept for the next flush (and the error raised)."""
        taken = self.seen.take()
        if not taken:
            return 0
        try:
            # A transaction per part, so that no row stays locked while the others are written
            # (seen_times.PART).
            for part in taken.parts():
                async with self.write() as uow:
                    await write_times(uow.session, part)
        except BaseException:
            # All of it, parts written included: a time is written only if it moves forward,
            # so writing one again changes nothing.
            self.seen.put_back(taken)
            raise
        return len(taken)

    async def _flush_seen_forever(self) -> None:
        while True:
            await asyncio.sleep(self._seen_flush_seconds)
            try:
                await self.flush_seen()
            except Exception as error:
                log.warning("seen_times.flush_failed", error=str(error)[:200])

    @asynccontextmanager
    async def _session(
        self, sessions: async_sessionmaker[AsyncSession]
    ) -> AsyncIterator[AsyncSession]:
        """A session whose connection goes back to the pool only in a known state.

        A request is cancelled wherever it is when its time budget runs out: in a statement, a
        commit or a checkout. A connection interrupted there serves no one else (its statement
        may still run on the server, its answer still be on the wire, its transaction be half
        done), so on a cancellation every connection the session checked out is invalidated:
        closed, which rolls back on the server, and its pool slot returned. That sends nothing,
        so it cannot hang on a server that does not answer; it is the only path that costs
        anything, normal exits and ordinary errors close the session as before."""
        checked_out: list[PoolProxiedConnection] = []
        tracking = _checked_out.set(checked_out)
        session = sessions()
        try:
            yield session
        except BaseException as error:
            if _interrupted(error):
                await _discard(session, checked_out, error)
            else:
                await _close(session, checked_out)
            raise
        else:
            await _close(session, checked_out)
        finally:
            _checked_out.reset(tracking)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads; nothing it does is committed."""
        async with self._session(self._read_sessions) as session:
            yield session
            if self.is_postgresql:
                # A ROLLBACK makes psycopg forget every statement it prepared on the connection
                # (and send DEALLOCATE ALL): with reads ended that way, the pool's connections
                # kept little prepared, and PostgreSQL parsed and planned most statements anew
                # (bench.sync_cost --call chain: its CPU per action 5.1-5.7 -> 2.8-3.2 ms). The
                # transaction is READ ONLY, so its COMMIT commits nothing: a write fails instead.
                await session.commit()

    @asynccontextmanager
    async def quick_read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads whose statements need no common snapshot (each sees what was
        committed when it ran): authentication, a spec poll. On PostgreSQL each statement
        runs by itself, which spares a transaction's BEGIN and ROLLBACK round trips."""
        async with self._session(self._quick_sessions) as session:
            yield session

    @asynccontextmanager
    async def write(self, own: OwnChanges | None = None) -> AsyncIterator[UnitOfWork]:
        """A write transaction: committed on normal exit, rolled back on an exception (when
        cancelled, by closing its connection: see `_session`). With `own`, what it changes is
        recorded there for steady syncs' looks (store/sync_looks.py `keep_written`)."""
        if self._write_lock is not None:
            await self._write_lock.acquire()
        try:
            async with self._session(self._sessions) as session:
                uow = UnitOfWork(session)
                yield uow
                echoes: list[Notice] = []
                notices = _notices(uow) if self.is_postgresql else []
                if notices:
                    # This process applies them as it commits (below); expected before the
                    # commit, so the echo cannot come back before it is.
                    pid = await _backend_pid(session)
                    echoes = self.notifier.expect_echo(pid, notices)
                # No sync is answered from a look this commit makes stale while it commits.
                self._forget_sync_looks(uow, own)
                try:
                    if notices:
                        await _notify_and_commit(session, notices)
                    await session.commit()
                except BaseException:
                    self.notifier.drop_echo(echoes)
                    raise
        finally:
            # Only once the session is closed or discarded: on SQLite its transaction has then
            # ended, so the next writer does not wait out busy_timeout behind it.
            if self._write_lock is not None:
                self._write_lock.release()
        if uow.changed_keys:
            # Here at once, before the caller answers; other processes when the NOTIFY arrives.
            self.key_cache.evict(uow.changed_keys)
        if not self.is_postgresql:
            notifier = self.notifier
            for executor_id in uow.wake_executors:
                notifier.publish_local(str(executor_id), own)
            for executor_id in uow.changed_executors:
                notifier.publish_local(f"{executor_id}/sync", own)
            for organization_id, node_ids in uow.changed_nodes.items():
                if node_ids:
                    notifier.publish_nodes(organization_id, frozenset(node_ids), own)
        else:
            # Here at once, before the caller answers; other processes when the NOTIFY arrives.
            self._forget_sync_looks(uow, own)
            # The held polls of this process too: a lifecycle action's pickup does not wait
            # for the NOTIFY's trip through PostgreSQL and this process's LISTEN connection.
            for executor_id in uow.wake_executors:
                self.notifier.wake_local(str(executor_id))

    def _forget_sync_looks(self, uow: UnitOfWork, own: OwnChanges | None = None) -> None:
        """What steady syncs read of what `uow` changes is stale: called as it commits, and
        again once it has (a read made in between saw the state before)."""
        if not (uow.wake_executors or uow.changed_executors or uow.changed_nodes):
            return
        looks = self.notifier.sync_looks
        for executor_id in uow.wake_executors | uow.changed_executors:
            looks.executor_changed(str(executor_id), own)
        for organization_id, node_ids in uow.changed_nodes.items():
            if node_ids:
                looks.nodes_changed(organization_id, frozenset(node_ids), own)


async def _close(session: AsyncSession, checked_out: list[PoolProxiedConnection]) -> None:
    """Close `session`, rolling back what is open, in a task of its own as SQLAlchemy does. A
    caller cancelled meanwhile does not wait for it (the rollback is one quick round trip,
    cheaper to finish than to cancel); the close is bounded by CLOSE_SECONDS, past which it is
    cancelled, and psycopg and SQLAlchemy then close the connection rather than pool it."""
    closing = asyncio.create_task(_close_and_release(session, checked_out))
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        closing.add_done_callback(_log_failed_close)
        raise


async def _close_and_release(
    session: AsyncSession, checked_out: list[PoolProxiedConnection]
) -> None:
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await session.close()
    finally:
        await _invalidate_strays(checked_out, None)


def _log_failed_close(task: "asyncio.Task[None]") -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning("database.close_failed", error=repr(error)[:200])


async def _discard(
    session: AsyncSession, checked_out: list[PoolProxiedConnection], error: BaseException
) -> None:
    """Invalidate the connections `session` holds, and any it was checked out for without
    coming to hold: each is closed and its pool slot returned, none is used again. Closing a
    psycopg connection sends nothing and never yields to the event loop, so this neither
    hangs nor is interrupted by a further cancellation."""
    try:
        await session.invalidate()
    except Exception as failure:  # what the session held is then closed one by one below
        log.warning("database.invalidate_failed", error=repr(failure)[:200])
    await _invalidate_strays(checked_out, error)


async def _invalidate_strays(
    checked_out: list[PoolProxiedConnection], error: BaseException | None
) -> None:
    """Invalidate what is still checked out of `checked_out` once its session is closed: a
    connection the session never came to hold (`_track_checkouts`)."""
    for proxy in checked_out:
        if proxy.is_valid:
            try:
                await greenlet_spawn(proxy.invalidate, error)
            except Exception as failure:
                log.warning("database.invalidate_failed", error=repr(failure)[:200])
