"""The cache of executor keys' authentications (store/key_cache.py): what it keeps, for how
long, and that nothing read before an eviction is put back after it."""

import uuid
from datetime import UTC, datetime, timedelta

from nodeplane.controlplane.store.key_cache import KeyCache

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_is_kept_until_evicted_by_its_key() -> None:
    cache: KeyCache[str] = KeyCache()
    a, b = uuid.uuid4(), uuid.uuid4()
    cache.put("digest-a", cache.generation, a, "principal a", None, None)
    cache.put("digest-b", cache.generation, b, "principal b", None, None)
    entry = cache.get("digest-a", NOW)
    assert entry is not None and entry.value == "principal a" and entry.key_id == a
    cache.evict([a])
    assert cache.get("digest-a", NOW) is None
    assert cache.get("digest-b", NOW) is not None
    cache.clear()
    assert cache.get("digest-b", NOW) is None and len(cache) == 0


def test_a_lookup_begun_before_an_eviction_does_not_store_what_it_read() -> None:
    cache: KeyCache[str] = KeyCache()
    key = uuid.uuid4()
    began = cache.generation  # a request reads the key from the database...
    cache.evict([key])  # ...while another revokes it and commits
    cache.put("digest", began, key, "stale principal", None, None)
    assert cache.get("digest", NOW) is None
    # Any eviction counts, not only of this key: the read may have raced any of them.
    began = cache.generation
    cache.evict([uuid.uuid4()])
    cache.put("digest", began, key, "principal", None, None)
    assert cache.get("digest", NOW) is None
    cache.put("digest", cache.generation, key, "principal", None, None)
    assert cache.get("digest", NOW) is not None


def test_an_expired_key_or_an_old_entry_is_not_served() -> None:
    clock = Clock()
    cache: KeyCache[str] = KeyCache(ttl=60, clock=clock)
    short, long = uuid.uuid4(), uuid.uuid4()
    cache.put("short", cache.generation, short, "p", NOW + timedelta(seconds=5), None)
    cache.put("long", cache.generation, long, "p", None, None)
    assert cache.get("short", NOW) is not None
    assert cache.get("short", NOW + timedelta(seconds=5)) is None  # expired: gone
    assert cache.get("short", NOW) is None
    clock.now += 61
    assert cache.get("long", NOW) is None  # past the backstop


def test_nothing_is_served_or_stored_while_the_cache_may_not_be_used() -> None:
    usable = [True]
    cache: KeyCache[str] = KeyCache(usable=lambda: usable[0])
    key = uuid.uuid4()
    cache.put("digest", cache.generation, key, "p", None, None)
    usable[0] = False  # on PostgreSQL: the LISTEN connection is down
    assert cache.get("digest", NOW) is None
    cache.put("other", cache.generation, uuid.uuid4(), "p", None, None)
    usable[0] = True
    assert cache.get("other", NOW) is None


def test_the_cache_is_bounded_oldest_first() -> None:
    cache: KeyCache[int] = KeyCache(max_entries=3)
    keys = [uuid.uuid4() for _ in range(5)]
    for i, key in enumerate(keys):
        cache.put(f"d{i}", cache.generation, key, i, None, None)
    assert len(cache) == 3
    assert [cache.get(f"d{i}", NOW) is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    # Evicting a key dropped for room is harmless.
    cache.evict([keys[0]])
    assert len(cache) == 3
