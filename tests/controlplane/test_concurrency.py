"""Two users acting on one node at once: optimistic concurrency and contiguous revisions."""

import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nodeplane.protocol import ProcessStatus
from tests.support.calls import act, all_events, deploy, get_node, revisions
from tests.support.fleet import FakeExecutor, Org
from tests.support.gql import Client, GraphQLError

THREADS = 10


def race(calls: Sequence[tuple[Client, str, int | None]], node_id: str) -> list[Any]:
    """Issue every (client, action, expectedRevision) at once; each result or GraphQLError."""
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[Client, str, int | None]) -> Any:
        client, action, expected = call
        barrier.wait()
        try:
            return act(client, node_id, action, expected)
        except GraphQLError as err:
            return err

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_same_expected_revision_one_writer_wins(org: Org, executor: FakeExecutor) -> None:
    admin = org.add_member("ADMIN")
    users = [org.owner, admin]
    emails = {id(c): c("{ me { email } }")["me"]["email"] for c in users}
    nid = deploy(org.owner, executor, "ltc-contended")["id"]
    executor.observe(nid, 1, ProcessStatus.RUNNING)

    winners: list[tuple[str, str]] = []  # (action, actor email) per round
    revision = 1
    for _ in range(4):
        running = get_node(org.owner, nid)["desiredState"] == "RUNNING"
        # Only actions that write from this state, so every success is a write.
        actions = ["STOP", "RESTART"] if running else ["START"]
        calls = [(users[i % 2], actions[i % len(actions)], revision) for i in range(THREADS)]
        results = race(calls, nid)

        ok = [(call, r) for call, r in zip(calls, results, strict=True) if isinstance(r, dict)]
        failed = [r for r in results if isinstance(r, GraphQLError)]
        assert len(ok) == 1, f"{len(ok)} writers won at revision {revision}"
        assert len(failed) == THREADS - 1
        assert {e.code for e in failed} == {"revision_conflict"}, [str(e) for e in failed]
        assert {e.extensions["currentRevision"] for e in failed} == {revision + 1}
        (client, action, _), node = ok[0]
        assert node["revision"] == revision + 1
        winners.append((action.lower(), emails[id(client)]))
        revision += 1

    assert get_node(org.owner, nid)["revision"] == revision == 5
    history = revisions(org.owner, nid)
    assert [h["revision"] for h in history] == [1, 2, 3, 4, 5]
    assert [(h["cause"], h["author"]) for h in history[1:]] == [
        (f"lifecycle: {action}", email) for action, email in winners
    ]
    requested = list(reversed(all_events(org.owner, nodeId=nid, type="node.lifecycle.requested")))
    assert [(e["payload"]["action"], e["payload"]["revision"], e["actor"]) for e in requested] == [
        (action, rev, email) for rev, (action, email) in enumerate(winners, start=2)
    ]


def test_concurrent_restarts_without_expected_revision_all_apply(
    org: Org, executor: FakeExecutor
) -> None:
    admin = org.add_member("ADMIN")
    nid = deploy(org.owner, executor, "ltc-restarts")["id"]
    calls: list[tuple[Client, str, int | None]] = [
        ((org.owner, admin)[i % 2], "RESTART", None) for i in range(THREADS)
    ]
    results = race(calls, nid)

    errors = [r for r in results if isinstance(r, GraphQLError)]
    assert errors == [], [str(e) for e in errors]
    assert sorted(r["revision"] for r in results) == list(range(2, THREADS + 2))
    # Each caller saw the generation its own write made.
    assert sorted(r["spec"]["restartGeneration"] for r in results) == list(range(1, THREADS + 1))
    assert all(r["spec"]["restartGeneration"] == r["revision"] - 1 for r in results)

    node = get_node(org.owner, nid)
    assert node["revision"] == THREADS + 1
    assert node["spec"]["restartGeneration"] == THREADS
    history = revisions(org.owner, nid)
    assert [h["revision"] for h in history] == list(range(1, THREADS + 2))
    assert [h["spec"]["restartGeneration"] for h in history] == list(range(THREADS + 1))
    requested = all_events(org.owner, nodeId=nid, type="node.lifecycle.requested")
    assert sorted(e["payload"]["revision"] for e in requested) == list(range(2, THREADS + 2))
    owner_email = org.owner("{ me { email } }")["me"]["email"]
    by_actor = Counter(e["actor"] for e in requested)
    assert by_actor[owner_email] == THREADS // 2 and sum(by_actor.values()) == THREADS

    # The executor, behind by all of it, gets only the latest revision.
    assert [s.revision for s in executor.poll({nid: 1})] == [THREADS + 1]
