"""What an executor key authenticates as, kept between requests.

Executors authenticate on every call (a heartbeat every 5 s, a spec poll renewed every 25 s), and
reading the key was a statement of its own on each. Entries are evicted by the key's id when a
transaction that changes the key commits (`UnitOfWork.keys_changed`): at once in the committing
process, and in every other process or replica when PostgreSQL delivers the NOTIFY on
`nodeplane_keys`. While the LISTEN connection is down notifications can be missed, so the cache
is then not used at all, and it is emptied whenever LISTEN is established again.

A lookup that started before an eviction cannot put back what it read: every eviction moves the
generation on, and `put` only stores an entry read in the generation it was asked for. Entries
also carry the key's expiry (checked on every use) and live at most `ttl` seconds, a backstop.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

T = TypeVar("T")

DEFAULT_TTL_SECONDS = 60.0
DEFAULT_MAX_ENTRIES = 100_000


@dataclass
class CachedKey(Generic[T]):
    """One key's authentication: what it stands for, until when, and when its use was last
    recorded (lastUsedAt is written at most every so often)."""

    key_id: UUID
    value: T
    expires_at: datetime | None
    last_used_at: datetime | None
    cached_at: float


class KeyCache(Generic[T]):
    """Token digest → CachedKey, bounded, evicted by key id (see the module's docstring)."""

    def __init__(
        self,
        usable: Callable[[], bool] = lambda: True,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._usable = usable
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, CachedKey[T]] = OrderedDict()
        self._digests_of: dict[UUID, set[str]] = {}
        self.generation = 0

    def get(self, digest: str, now: datetime) -> CachedKey[T] | None:
        """The entry for `digest` if the cache may be used and the entry is still good."""
        if not self._usable():
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() - entry.cached_at > self._ttl or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            self._drop(digest)
            return None
        return entry

    def put(
        self,
        digest: str,
        generation: int,
        key_id: UUID,
        value: T,
        expires_at: datetime | None,
        last_used_at: datetime | None,
    ) -> None:
        """Keep what a lookup begun in `generation` read, unless something was evicted since."""
        if generation != self.generation or not self._usable():
            return
        self._drop(digest)
        self._entries[digest] = CachedKey(key_id, value, expires_at, last_used_at, self._clock())
        self._digests_of.setdefault(key_id, set()).add(digest)
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def evict(self, key_ids: Iterable[UUID]) -> None:
        """Forget these keys (they changed); lookups in flight will not store theirs."""
        self.generation += 1
        for key_id in key_ids:
            for digest in self._digests_of.pop(key_id, set()):
                self._entries.pop(digest, None)

    def clear(self) -> None:
        """Forget everything (notifications may have been missed)."""
        self.generation += 1
        self._entries.clear()
        self._digests_of.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, digest: str) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            digests = self._digests_of.get(entry.key_id)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del self._digests_of[entry.key_id]
