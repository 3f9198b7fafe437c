"""Wake-ups for held spec polls, changed nodes for open nodes pages, live-log messages
(store/log_relay.py) and changed API keys (store/key_cache.py): in-process, fed by PostgreSQL
LISTEN when on PostgreSQL. Also what spec polls last read of each executor, kept until the
executor's next wake-up (`remember`), and what steady syncs last read (store/sync_looks.py)."""

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from uuid import UUID

import psycopg
import structlog

from nodeplane.controlplane.store.sync_looks import OwnChanges, SyncLooks

SPEC_CHANNEL = "nodeplane_specs"
NODES_CHANNEL = "nodeplane_nodes"
LOGS_CHANNEL = "nodeplane_logs"
KEYS_CHANNEL = "nodeplane_keys"
# PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more: more nodes than one payload holds
# (about 190) are named over several.
MAX_NODES_PAYLOAD = 7000
# Past this many payloads for one change (about 3,000 nodes), one says "every node of the
# organization" instead. Every other process forgets what steady syncs and polls of the whole
# organization read (store/sync_looks.py) when it hears that, so it is kept for changes that
# large: a batch of moved syncs or of heard-from times (500 nodes at most) that said it made a
# second worker re-read every executor's sync, which under a fleet's start made it fall behind
# for good (docs/benchmarks.md, the evening of 2026-12-07).
MAX_NODES_PAYLOADS = 16

# Called with (organization, node ids) on a change; None for the organization means every
# organization, None for the ids every node of it.
NodeListener = Callable[[UUID | None, frozenset[UUID] | None], None]

# A notice as NOTIFY sent it: the sending backend's process id, the channel, the payload.
Notice = tuple[int, str, str]
# Echoes expected at once past this many are forgotten, with every look (a bound on memory for
# notices that never came back, which only a LISTEN that went down explains).
MAX_ECHOES = 10_000

log = structlog.get_logger(__name__)


def nodes_payloads(organization_id: UUID, node_ids: Iterable[UUID]) -> list[str]:
    """`<organization>:<node>,<node>…`, the nodes spread over as many payloads as they need, or
    `[<organization>:*]` past MAX_NODES_PAYLOADS of them."""
    prefix = f"{organization_id}:"
    listed = sorted(str(n) for n in node_ids)
    # Every id is 36 characters and a comma: this many fit after the prefix.
    per = (MAX_NODES_PAYLOAD - len(prefix) + 1) // 37
    if len(listed) > per * MAX_NODES_PAYLOADS:
        return [f"{prefix}*"]
    return [prefix + ",".join(listed[i : i + per]) for i in range(0, len(listed), per)]


def parse_nodes_payload(payload: str) -> tuple[UUID, frozenset[UUID] | None] | None:
    """The organization and node ids (None: all) of one of `nodes_payloads`, None if malformed."""
    organization, _, listed = payload.partition(":")
    try:
        return UUID(organization), (
            None if listed == "*" else frozenset(UUID(n) for n in listed.split(",") if n)
        )
    except ValueError:
        return None


class ChangeNotifier:
    """Lets long-polls wait for a change to an executor's specs without missing one."""

    def __init__(self, listen_conninfo: str | None) -> None:
        self._conninfo = listen_conninfo
        # A bare future per held poll, not an asyncio.Event: an Event carries a dict and a deque
        # (over 600 bytes) besides the future it makes to wait, and 10,000 polls are held.
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._node_listeners: list[NodeListener] = []
        self._close_listeners: list[Callable[[], None]] = []
        self._log_listeners: list[Callable[[str], None]] = []
        self._listen_listeners: list[Callable[[], None]] = []
        self._key_listeners: list[Callable[[list[UUID]], None]] = []
        # What a poll read of a key (services/executors.py), until the key's next wake-up.
        self._looks: dict[str, object] = {}
        # What steady syncs read of each executor, until a change it depends on reaches here.
        self.sync_looks = SyncLooks(lambda: self.complete)
        # Notices this process sent, whose changes it recorded in `sync_looks` as it committed
        # them (`expect_echo`): when they come back, they are nothing new to it.
        self._echoes: Counter[Notice] = Counter()
        # True while the LISTEN connection is up (what is NOTIFYed now reaches this process).
        self.connected = False
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

    def subscribe(self, key: str) -> "asyncio.Future[None]":
        """Register interest in `key` before reading state, so no change slips between; the
        future is done once a change (or the shutdown) comes."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closing:
            waiter.set_result(None)
        self._waiters[key].add(waiter)
        return waiter

    @property
    def complete(self) -> bool:
        """True while every change reaches this process: in-process (SQLite), or LISTEN up."""
        return not self.closing and (self._conninfo is None or self.connected)

    def remember(self, key: str, waiter: "asyncio.Future[None]", look: object) -> None:
        """Keep `look`, what was read of `key` after `waiter` subscribed to it, until the next
        wake-up of `key`: a renewed poll then need not read it again (most of what 10,000
        held polls cost). Not kept when a wake-up came meanwhile (`waiter` is done: `look` may
        predate it) or changes may be missed."""
        if not waiter.done() and self.complete:
            self._looks[key] = look

    def recall(self, key: str) -> object | None:
        """What `remember` kept of `key`, if nothing has changed it since."""
        return self._looks.get(key) if self.complete else None

    def close_all(self) -> None:
        """Shutting down: wake every waiter now and every later one at once."""
        self.closing = True
        self._wake_all()
        for listener in self._close_listeners:
            listener()

    def on_close(self, listener: Callable[[], None]) -> None:
        """Call `listener` when `close_all` is (the server is shutting down)."""
        self._close_listeners.append(listener)

    def on_nodes(self, listener: NodeListener) -> None:
        """Call `listener` with every committed change to nodes, from any replica."""
        self._node_listeners.append(listener)

    def on_logs(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with every payload NOTIFYed on the live-logs channel (any replica)."""
        self._log_listeners.append(listener)

    def on_keys(self, listener: Callable[[list[UUID]], None]) -> None:
        """Call `listener` with the ids of API keys a committed transaction changed (any
        replica's, this process's included)."""
        self._key_listeners.append(listener)

    def publish_keys(self, key_ids: Iterable[UUID]) -> None:
        """Tell this process's key listeners that these keys changed."""
        ids = list(key_ids)
        for listener in self._key_listeners:
            listener(ids)

    def on_listening(self, listener: Callable[[], None]) -> None:
        """Call `listener` each time LISTEN is (re)established: what was NOTIFYed before may
        have been missed."""
        self._listen_listeners.append(listener)

    def expect_echo(self, pid: int, notices: Iterable[tuple[str, str]]) -> list[Notice]:
        """These notices (channel, payload), sent by the backend `pid` in a transaction about
        to commit, whose changes this process applies itself as it commits (store/database.py
        `Database.write`): to `sync_looks` (as its own changes, with `OwnChanges`) and to its
        held polls (`wake_local`). Their echo is then no change to a look and wakes no poll
        again; node listeners still get it. Returns them, for `drop_echo` if the commit fails.
        PostgreSQL delivers notices in commit order, and a backend's id cannot be another
        backend's while it is alive: the first notice from `pid` that matches is the echo."""
        expected = [(pid, channel, payload) for channel, payload in notices]
        if len(self._echoes) + len(expected) > MAX_ECHOES:
            self._echoes.clear()
            self.sync_looks.forget_all()
        self._echoes.update(expected)
        return expected

    def drop_echo(self, expected: list[Notice]) -> None:
        """The transaction of `expect_echo` did not commit (or may not have): its notices, if
        they come after all, count as changes."""
        self._echoes.subtract(expected)
        self._echoes = +self._echoes

    def _echo(self, notice: Notice) -> bool:
        """Whether `notice` is an expected echo (and no longer expected)."""
        if notice not in self._echoes:  # counts stay positive (`drop_echo` removes the rest)
            return False
        self._echoes[notice] -= 1
        if not self._echoes[notice]:
            del self._echoes[notice]
        return True

    def publish_nodes(
        self,
        organization_id: UUID | None,
        node_ids: frozenset[UUID] | None,
        own: OwnChanges | None = None,
        *,
        echo: bool = False,
    ) -> None:
        """Tell this process's node listeners that these nodes changed (`own`: by that write
        of this process; `echo`: a notice of this process's, its changes recorded already)."""
        if not echo:
            self.sync_looks.nodes_changed(organization_id, node_ids, own)
        for listener in self._node_listeners:
            listener(organization_id, node_ids)

    def unsubscribe(self, key: str, waiter: "asyncio.Future[None]") -> None:
        """Drop a waiter registered with `subscribe`."""
        waiters = self._waiters.get(key)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[key]

    def publish_local(self, key: str, own: OwnChanges | None = None, *, echo: bool = False) -> None:
        """Wake every waiter on `key` in this process (and forget what was read of it). `key`
        is an executor's id, or `<id>/sync` (its row changed: nothing waits for that). `own`
        as for `publish_nodes`; `echo`: a notice of this process's, applied as it committed
        (nothing to do)."""
        if echo:
            return
        self.sync_looks.executor_changed(key, own)
        self.wake_local(key)

    def wake_local(self, key: str) -> None:
        """Wake every waiter on `key` in this process and forget what polls read of it."""
        self._looks.pop(key, None)
        for waiter in self._waiters.get(key, ()):
            _wake(waiter)

    def _wake_all(self) -> None:
        self._looks.clear()
        self._echoes.clear()
        self.sync_looks.forget_all()
        for waiters in self._waiters.values():
            for waiter in waiters:
                _wake(waiter)

    async def _listen_forever(self) -> None:
        assert self._conninfo is not None
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {SPEC_CHANNEL}")
                    await conn.execute(f"LISTEN {NODES_CHANNEL}")
                    await conn.execute(f"LISTEN {LOGS_CHANNEL}")
                    await conn.execute(f"LISTEN {KEYS_CHANNEL}")
                    self.connected = True
                    self._listening.set()
                    for listener in self._listen_listeners:
                        listener()
                    # Anything committed while we were not listening: let every poll re-read,
                    # and every open nodes page take every row afresh.
                    self._wake_all()
                    self.publish_nodes(None, None)
                    backoff = 0.5
                    async for notice in conn.notifies():
                        echo = self._echo((notice.pid, notice.channel, notice.payload))
                        if notice.channel == NODES_CHANNEL:
                            parsed = parse_nodes_payload(notice.payload)
                            if parsed is not None:
                                self.publish_nodes(*parsed, echo=echo)
                        elif notice.channel == LOGS_CHANNEL:
                            for log_listener in self._log_listeners:
                                log_listener(notice.payload)
                        elif notice.channel == KEYS_CHANNEL:
                            self.publish_keys(_key_ids(notice.payload))
                        else:
                            self.publish_local(notice.payload, echo=echo)
            except asyncio.CancelledError:
                self.connected = False
                raise
            except Exception as exc:  # reconnect on any connection failure
                self.connected = False
                log.warning("listen.failed", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


def _wake(waiter: "asyncio.Future[None]") -> None:
    # Done already when woken twice, or cancelled when its poll timed out.
    if not waiter.done():
        waiter.set_result(None)


def _key_ids(payload: str) -> list[UUID]:
    """The key ids of a `nodeplane_keys` payload (comma-separated); a malformed one yields
    none of its ids, which `publish_keys` listeners treat as a reason to forget everything."""
    try:
        return [UUID(part) for part in payload.split(",") if part]
    except ValueError:
        return []
