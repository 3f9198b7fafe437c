"""What a steady sync read of an executor, kept so that its next identical sync is answered
without validating or reading anything (services/executors.py `kept_sync`).

A fleet at rest sends the same heartbeat, byte for byte, every few seconds. Its answer is
decided by the executor's row (live instance, connected, name, kind, version, capabilities,
resources) and its nodes' rows (owner, revision, stored observation). A look is kept only when
a read found the sync steady, and only until a change could alter that answer:

- a wake-up of the executor (a new revision, a node moved or deleted, a new live instance);
- a change to the executor's row by any sync that took the write path, or by the offline sweep
  (`UnitOfWork.executor_changed`, `<id>/sync` on the spec channel);
- a change to any of its nodes (the nodes channel, which every stored observation notifies),
  or to every node of its organization, or of all organizations;
- changes that may have been missed: PostgreSQL's LISTEN down, reconnected or shutting down.

Changes are numbered as they reach this process. A read takes the number before it starts
(`begin`); what it read is kept only if nothing it depends on changed after that number, so a
change that lands while the read is in flight is never hidden by it.

A sync that took the write path leaves the same look once it has committed (`keep_written`):
what it stored is what its repeat would read. The changes it made itself are numbered like any
other (a read in flight meanwhile must not be kept), but as its own (`OwnChanges`), so they do
not make its look stale; any other change after its `begin` does, including one that its own
change of the same executor or node renumbered.
"""

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import TypeVar
from uuid import UUID

_Key = TypeVar("_Key", str, UUID)

# Past this many recorded changes, everything is forgotten and counting starts afresh: a bound
# on memory (one entry per node and executor changed) that costs each executor one read.
CAPACITY = 200_000


@dataclass(frozen=True)
class SyncLook:
    """A steady sync of one executor as read from the database."""

    executor_id: UUID
    name: str
    organization_id: UUID
    # The request's bytes, instance header and key, as the caller fingerprints them.
    fingerprint: Hashable
    instance_id: UUID
    node_ids: tuple[UUID, ...]
    # The change number its read began at (`begin`): a change numbered after it makes it stale.
    since: int


@dataclass
class OwnChanges:
    """The changes one write transaction makes, numbered as they are recorded (`SyncLooks`),
    for the look its sync keeps (`keep_written`)."""

    # The number its sync began at (`begin`).
    since: int
    numbers: set[int] = field(default_factory=set)
    # Another change came after `since` to something this one then changed again.
    tainted: bool = False


class SyncLooks:
    """Each executor's last steady sync, kept until something it depends on changes."""

    def __init__(self, complete: Callable[[], bool]) -> None:
        # True while every change reaches this process (ChangeNotifier.complete).
        self._complete = complete
        self._count = 0
        self._floor = 0  # looks read before this number are stale (everything was forgotten)
        self._executors: dict[str, int] = {}
        self._nodes: dict[UUID, int] = {}
        self._organizations: dict[UUID, int] = {}
        self._looks: dict[UUID, SyncLook] = {}

    def __len__(self) -> int:
        return len(self._looks)

    def begin(self) -> int:
        """The number to give `keep` for what is read from now on."""
        return self._count

    def keep(self, look: SyncLook) -> None:
        """Keep `look` (read after `begin` returned `look.since`) unless it may be stale."""
        if self._complete() and self._current(look):
            self._looks[look.executor_id] = look
        else:
            self._looks.pop(look.executor_id, None)

    def keep_written(self, look: SyncLook, own: OwnChanges) -> None:
        """Keep `look`, what a sync that began at `own.since` wrote and committed, unless a
        change other than its own (`own`) came after that number."""
        assert look.since == own.since
        if self._complete() and not own.tainted and self._current(look, own.numbers):
            # Nothing but its own changes came since: it is as current as a read begun now.
            self._looks[look.executor_id] = replace(look, since=self._count)
        else:
            self._looks.pop(look.executor_id, None)

    def recall(self, executor_id: UUID, fingerprint: Hashable) -> SyncLook | None:
        """The executor's kept look if the sync's fingerprint is its and nothing changed it."""
        look = self._looks.get(executor_id)
        if look is None or look.fingerprint != fingerprint:
            return None
        if self._complete() and self._current(look):
            return look
        del self._looks[executor_id]
        return None

    def executor_changed(self, key: str, own: OwnChanges | None = None) -> None:
        """The executor `key` (its id as text, or `<id>/sync`) changed or was woken (by the
        write whose changes `own` records, if given)."""
        at = self._next()
        self._mark(self._executors, key.partition("/")[0], at, own)

    def nodes_changed(
        self,
        organization_id: UUID | None,
        node_ids: frozenset[UUID] | None,
        own: OwnChanges | None = None,
    ) -> None:
        """These nodes changed (None: every node of the organization; no organization: all),
        by the write whose changes `own` records, if given."""
        if organization_id is None:
            self.forget_all()
        elif node_ids is None:
            at = self._next()
            self._mark(self._organizations, organization_id, at, own)
        else:
            at = self._next()
            for node_id in node_ids:
                self._mark(self._nodes, node_id, at, own)

    @staticmethod
    def _mark(numbers: dict[_Key, int], key: _Key, at: int, own: OwnChanges | None) -> None:
        if own is not None:
            before = numbers.get(key, 0)
            if before > own.since and before not in own.numbers:
                own.tainted = True  # another change, which this one would hide
            own.numbers.add(at)
        numbers[key] = at

    def forget_all(self) -> None:
        """Changes may have been missed: nothing read before now is kept or recalled."""
        self._count += 1
        self._floor = self._count
        self._executors.clear()
        self._nodes.clear()
        self._organizations.clear()
        self._looks.clear()

    def _next(self) -> int:
        self._count += 1
        if len(self._nodes) + len(self._executors) + len(self._organizations) >= CAPACITY:
            self.forget_all()
        return self._count

    def _current(self, look: SyncLook, own: set[int] | frozenset[int] = frozenset()) -> bool:
        """Whether nothing `look` depends on changed after its number, but for changes `own`."""
        since = look.since
        if since < self._floor:
            return False

        def fresh(at: int) -> bool:
            return at <= since or at in own

        if not fresh(self._executors.get(str(look.executor_id), 0)):
            return False
        if not fresh(self._organizations.get(look.organization_id, 0)):
            return False
        nodes = self._nodes
        return all(fresh(nodes.get(node_id, 0)) for node_id in look.node_ids)
