"""What steady syncs keep of an executor (store/sync_looks.py): recalled only for the same
fingerprint, forgotten at any change it depends on (the executor, one of its nodes, its
organization, everything), never kept when such a change came while it was read, and never
recalled while changes may be missed."""

import asyncio
import uuid

import pytest

from nodeplane.controlplane.store import sync_looks
from nodeplane.controlplane.store.notify import ChangeNotifier
from nodeplane.controlplane.store.sync_looks import SyncLook, SyncLooks

ORG = uuid.uuid4()


def _look(looks: SyncLooks, executor: uuid.UUID, nodes: tuple[uuid.UUID, ...]) -> SyncLook:
    return SyncLook(
        executor_id=executor,
        name="host-1",
        organization_id=ORG,
        fingerprint=(b"digest", "instance", "key"),
        instance_id=uuid.uuid4(),
        node_ids=nodes,
        since=looks.begin(),
    )


def _kept(looks: SyncLooks, look: SyncLook) -> bool:
    return looks.recall(look.executor_id, look.fingerprint) is look


def test_a_look_is_recalled_for_its_fingerprint_until_what_it_read_changes() -> None:
    looks = SyncLooks(lambda: True)
    executor, other = uuid.uuid4(), uuid.uuid4()
    mine, theirs = (uuid.uuid4(), uuid.uuid4()), (uuid.uuid4(),)
    look = _look(looks, executor, mine)
    looks.keep(look)
    assert _kept(looks, look)
    assert looks.recall(executor, (b"other bytes", "instance", "key")) is None
    assert looks.recall(other, look.fingerprint) is None

    # Changes to another executor, or to nodes it does not name, leave it.
    looks.executor_changed(str(other))
    looks.executor_changed(f"{other}/sync")
    looks.nodes_changed(ORG, frozenset(theirs))
    looks.nodes_changed(uuid.uuid4(), None)
    assert _kept(looks, look)

    for change in (
        lambda: looks.executor_changed(str(executor)),  # woken: a revision, a move, an instance
        lambda: looks.executor_changed(f"{executor}/sync"),  # its row written by a sync, a sweep
        lambda: looks.nodes_changed(ORG, frozenset({mine[1]})),  # one of its nodes
        lambda: looks.nodes_changed(ORG, None),  # every node of its organization
        lambda: looks.nodes_changed(None, None),  # everything
        looks.forget_all,  # LISTEN reconnected: anything may have been missed
    ):
        look = _look(looks, executor, mine)
        looks.keep(look)
        assert _kept(looks, look)
        change()
        assert looks.recall(executor, look.fingerprint) is None
        assert len(looks) == 0


def test_a_look_read_while_something_it_depends_on_changed_is_not_kept() -> None:
    looks = SyncLooks(lambda: True)
    executor, node = uuid.uuid4(), uuid.uuid4()
    older = _look(looks, executor, (node,))
    looks.keep(older)
    # A read begins; the node changes before it is kept: what it read may predate the change,
    # and the look kept before it is stale too.
    began = _look(looks, executor, (node,))
    looks.nodes_changed(ORG, frozenset({node}))
    looks.keep(began)
    assert looks.recall(executor, began.fingerprint) is None
    # A read that begins after the change is kept.
    after = _look(looks, executor, (node,))
    looks.keep(after)
    assert _kept(looks, after)


def test_nothing_is_kept_or_recalled_while_changes_may_be_missed() -> None:
    asyncio.run(_while_missed())


async def _while_missed() -> None:
    notifier = ChangeNotifier("host=127.0.0.1")  # never started: LISTEN is down
    looks = notifier.sync_looks
    executor = uuid.uuid4()
    look = _look(looks, executor, ())
    looks.keep(look)
    assert looks.recall(executor, look.fingerprint) is None
    notifier.connected = True
    looks.keep(look)
    assert _kept(looks, look)
    notifier.connected = False
    assert looks.recall(executor, look.fingerprint) is None

    # The notifier forwards what reaches it: a wake-up, a row change, nodes, shutting down.
    local = ChangeNotifier(None)
    node = uuid.uuid4()
    for change in (
        lambda: local.publish_local(str(executor)),
        lambda: local.publish_local(f"{executor}/sync"),
        lambda: local.publish_nodes(ORG, frozenset({node})),
        local.close_all,
    ):
        look = _look(local.sync_looks, executor, (node,))
        local.sync_looks.keep(look)
        if not local.closing:
            assert _kept(local.sync_looks, look)
        change()
        assert local.sync_looks.recall(executor, look.fingerprint) is None


def test_past_its_capacity_everything_is_forgotten_and_counting_starts_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sync_looks, "CAPACITY", 10)
    looks = SyncLooks(lambda: True)
    executor, node = uuid.uuid4(), uuid.uuid4()
    look = _look(looks, executor, (node,))
    looks.keep(look)
    for _ in range(10):
        looks.nodes_changed(ORG, frozenset({uuid.uuid4()}))
    assert _kept(looks, look)  # ten recorded changes, none of them its
    looks.nodes_changed(ORG, frozenset({uuid.uuid4()}))
    assert looks.recall(executor, look.fingerprint) is None
    fresh = _look(looks, executor, (node,))
    looks.keep(fresh)
    assert _kept(looks, fresh)
