"""Which specs a spec poll returns, from the revisions alone (services/executors._stale)."""

from uuid import UUID, uuid4

import pytest

from nodeplane.controlplane.services.executors import _stale
from nodeplane.protocol import KnownRevision

A, B, C = uuid4(), uuid4(), uuid4()


def known(*items: tuple[UUID, int, bool]) -> dict[UUID, KnownRevision]:
    return {n: KnownRevision(node_id=n, revision=r, deleted=d) for n, r, d in items}


@pytest.mark.parametrize(
    ("current", "held", "newer", "gone"),
    [
        # nothing assigned, nothing held
        ([], {}, [], []),
        # the steady state: every node at the revision held
        ([(A, 3, False), (B, 1, False)], known((A, 3, False), (B, 1, False)), [], []),
        # a new node, and a newer revision of a held one
        ([(A, 4, False), (B, 1, False)], known((B, 1, False)), [A], []),
        ([(A, 4, False)], known((A, 3, False)), [A], []),
        # an executor ahead of the control plane (restored database) is not sent backwards
        ([(A, 2, False)], known((A, 3, False)), [], []),
        # deleted since: the same revision, now a tombstone the executor has not seen
        ([(A, 3, True)], known((A, 3, False)), [A], []),
        # a tombstone the executor already holds
        ([(A, 3, True)], known((A, 3, True)), [], []),
        # SQLite answers the deleted flag as 0/1
        ([(A, 3, 1)], known((A, 3, True)), [], []),
        ([(A, 3, 0)], known((A, 3, False)), [], []),
        # gone entirely (torn down and removed, or moved away): tombstone from what is held
        ([], known((A, 3, False)), [], [A]),
        # gone, and the executor already treats it as deleted: nothing to say
        ([], known((A, 3, True)), [], []),
        ([(B, 1, False)], known((A, 2, False), (C, 5, True)), [B], [A]),
    ],
)
def test_stale(
    current: list[tuple[UUID, int, bool]],
    held: dict[UUID, KnownRevision],
    newer: list[UUID],
    gone: list[UUID],
) -> None:
    got_newer, got_gone = _stale(current, held)
    assert got_newer == newer
    assert [k.node_id for k in got_gone] == gone
