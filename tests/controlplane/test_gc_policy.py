"""The server's garbage-collection policy (controlplane/gc_policy.py)."""

import gc
from collections.abc import Iterator

import pytest

from nodeplane.controlplane import gc_policy
from nodeplane.controlplane.gc_policy import FullCollections, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_settling_freezes_startup_objects_and_stops_count_driven_full_passes(
    restored_gc: None,
) -> None:
    made_at_startup = [object() for _ in range(10)], {"cycle": None}
    made_at_startup[1]["cycle"] = made_at_startup  # tracked by the collector
    settle_after_startup()
    assert gc.get_freeze_count() > 0
    young, middle, full = gc.get_threshold()
    assert (young, middle) == gc_policy.THRESHOLDS[:2]
    # Full passes would need a billion middle-generation passes first: in practice, never.
    assert full >= 1_000_000_000


def test_full_collections_run_once_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(gc_policy.time, "monotonic", lambda: clock[0])
    collected: list[int] = []
    monkeypatch.setattr(gc_policy.gc, "collect", lambda: collected.append(1) or 7)
    full = FullCollections(interval=600.0)
    assert full.maybe_collect() is None
    clock[0] += 599.0
    assert full.maybe_collect() is None
    clock[0] += 1.0
    assert full.maybe_collect() == 7
    assert full.maybe_collect() is None  # the next one is an interval away again
    clock[0] += 600.0
    assert full.maybe_collect() == 7
    assert len(collected) == 2
