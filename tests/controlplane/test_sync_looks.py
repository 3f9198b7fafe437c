"""What steady syncs keep of an executor (store/sync_looks.py): recalled only for the same
fingerprint, forgotten at any change it depends on (the executor, one of its nodes, its
organization, everything), never kept when such a change came while it was read, and never
recalled while changes may be missed."""

import asyncio
import uuid

import pytest

from nodeplane.controlplane.store import sync_looks
from nodeplane.controlplane.store.notify import NODES_CHANNEL, SPEC_CHANNEL, ChangeNotifier
from nodeplane.controlplane.store.sync_looks import OwnChanges, SyncLook, SyncLooks

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


def test_a_written_sync_keeps_its_look_through_its_own_changes_only() -> None:
    looks = SyncLooks(lambda: True)
    executor, node, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def write(own: OwnChanges) -> None:
        """What a written sync records as it commits, and again once it has."""
        for _ in range(2):
            looks.executor_changed(f"{executor}/sync", own)
            looks.nodes_changed(ORG, frozenset({node}), own)

    # Its own changes: kept, and recalled afterwards like a look read then.
    look = _look(looks, executor, (node,))
    own = OwnChanges(look.since)
    write(own)
    looks.keep_written(look, own)
    assert looks.recall(executor, look.fingerprint) is not None
    looks.nodes_changed(ORG, frozenset({other}))
    assert looks.recall(executor, look.fingerprint) is not None
    looks.nodes_changed(ORG, frozenset({node}))  # anyone else's change afterwards
    assert looks.recall(executor, look.fingerprint) is None

    # Another change to what it depends on, while it was written, before or after its own
    # change of the same thing, or to its whole organization: not kept.
    for change, before_own in (
        (lambda: looks.executor_changed(str(executor)), True),
        (lambda: looks.nodes_changed(ORG, frozenset({node})), True),
        (lambda: looks.executor_changed(str(executor)), False),
        (lambda: looks.nodes_changed(ORG, frozenset({node})), False),
        (lambda: looks.nodes_changed(ORG, None), False),
        (looks.forget_all, False),
    ):
        look = _look(looks, executor, (node,))
        own = OwnChanges(look.since)
        if before_own:
            change()
        write(own)
        if not before_own:
            change()
        looks.keep_written(look, own)
        assert looks.recall(executor, look.fingerprint) is None, change

    # Its own changes still count for a read that was in flight meanwhile.
    read = _look(looks, executor, (node,))
    written = _look(looks, executor, (node,))
    own = OwnChanges(written.since)
    write(own)
    looks.keep(read)
    assert looks.recall(executor, read.fingerprint) is None


def test_an_expected_echo_is_no_change_once_and_from_its_backend_only() -> None:
    notifier = ChangeNotifier(None)
    executor = uuid.uuid4()
    payload = f"{executor}/sync"
    expected = notifier.expect_echo(4242, [(SPEC_CHANNEL, payload)])
    assert not notifier._echo((4243, SPEC_CHANNEL, payload))  # another backend's
    assert not notifier._echo((4242, NODES_CHANNEL, payload))
    assert notifier._echo((4242, SPEC_CHANNEL, payload))
    assert not notifier._echo((4242, SPEC_CHANNEL, payload))  # a later one is a change
    # A transaction that did not commit: its notice, should it come, is a change.
    expected = notifier.expect_echo(4242, [(SPEC_CHANNEL, payload)])
    notifier.drop_echo(expected)
    assert not notifier._echo((4242, SPEC_CHANNEL, payload))
    # LISTEN re-established: what was expected before may never come.
    notifier.expect_echo(4242, [(SPEC_CHANNEL, payload)])
    notifier._wake_all()
    assert not notifier._echo((4242, SPEC_CHANNEL, payload))
    # An echo changes nothing kept; the same notice from elsewhere does.
    look = _look(notifier.sync_looks, executor, ())
    notifier.sync_looks.keep(look)
    notifier.publish_local(payload, echo=True)
    assert _kept(notifier.sync_looks, look)
    notifier.publish_local(payload)
    assert notifier.sync_looks.recall(executor, look.fingerprint) is None
