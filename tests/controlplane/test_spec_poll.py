"""The executor's spec long-poll against a real server, on SQLite and PostgreSQL (DESIGN §4)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import DesiredState, RuntimeEvent
from tests.support.calls import act, deploy
from tests.support.fleet import FakeExecutor, Org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess

POLL = """
query($known: JSON, $wait: Float!) {
  executorSpecs(known: $known, waitSeconds: $wait) { nodeId revision deleted }
}"""


def test_held_poll_wakes_promptly_on_a_user_commit(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-wake")["id"]
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        held = pool.submit(executor.poll, {nid: 1}, 20)
        time.sleep(1.0)
        assert not held.done(), "a poll with nothing newer must be held, not answered at once"
        stopped = act(org.owner, nid, "STOP")
        committed = time.monotonic()
        specs = held.result(timeout=25)
        returned = time.monotonic()
    assert stopped["revision"] == 2
    assert returned - started < 5, f"poll took {returned - started:.1f}s of its 20s wait"
    assert returned - committed < 2, f"poll woke {returned - committed:.2f}s after the commit"
    assert [(s.node_id.hex, s.revision, s.deleted) for s in specs] == [
        (nid.replace("-", ""), 2, False)
    ]
    assert specs[0].spec is not None and specs[0].spec.desired_state is DesiredState.STOPPED


def test_poll_with_nothing_newer_returns_empty_after_its_wait(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-quiet")["id"]
    # Another executor's commits during the wait neither wake this poll with anything nor leak.
    other = FakeExecutor(executor.base_url, org.executor_key("other"))
    other.sync()
    other_nid = deploy(org.owner, other, "ltc-other")["id"]
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        held = pool.submit(executor.poll, {nid: 1}, 2)
        time.sleep(0.5)
        act(org.owner, other_nid, "STOP")
        specs = held.result(timeout=15)
        elapsed = time.monotonic() - started
    assert specs == []
    assert 1.8 <= elapsed < 5, f"a 2s poll took {elapsed:.2f}s"
    assert [s.revision for s in other.poll({other_nid: 1})] == [2]


def test_poll_returns_at_once_when_the_executor_is_behind(org: Org, executor: FakeExecutor) -> None:
    a = deploy(org.owner, executor, "ltc-a")["id"]
    b = deploy(org.owner, executor, "ltc-b")["id"]
    act(org.owner, b, "RESTART")  # b is at revision 2

    cases: list[tuple[dict[str, int], set[str], list[tuple[str, int]]]] = [
        ({}, set(), [(a, 1), (b, 2)]),  # holds nothing: gets everything
        ({a: 1, b: 1}, set(), [(b, 2)]),  # behind on b only
        ({a: 0, b: 2}, set(), [(a, 1)]),  # revision 0: never applied a
    ]
    for known, deleted, expected in cases:
        started = time.monotonic()
        specs = executor.poll(known, wait=20, deleted=deleted)
        elapsed = time.monotonic() - started
        assert elapsed < 3, f"poll with {known} was held {elapsed:.1f}s although behind"
        assert sorted((str(s.node_id), s.revision) for s in specs) == sorted(expected)

    # A node deleted while the executor holds it comes back at once as a tombstone.
    org.owner("mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }", {"id": a})
    started = time.monotonic()
    tomb = executor.poll({a: 1, b: 2}, wait=20)
    assert time.monotonic() - started < 3
    assert [(str(t.node_id), t.deleted) for t in tomb] == [(a, True)]


def test_wait_above_the_cap_is_capped(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    # The server's cap is injected (NODEPLANE_MAX_POLL_WAIT, 30 s unless set; the default is
    # checked in test_document_limits.py) so this does not wait out half a minute.
    cap = server.max_poll_wait
    assert cap is not None and cap < 30
    nid = deploy(org.owner, executor, "ltc-cap")["id"]
    as_executor = Client(server.url, executor.api_key)
    known = [{"nodeId": nid, "revision": 1}]

    started = time.monotonic()
    data = as_executor(POLL, {"known": known, "wait": 3600}, timeout=90)
    elapsed = time.monotonic() - started
    assert data["executorSpecs"] == []
    assert cap - 0.5 <= elapsed < cap + 10, f"a poll asking for 3600s was held {elapsed:.1f}s"

    # A negative wait is no wait at all.
    started = time.monotonic()
    assert as_executor(POLL, {"known": known, "wait": -5})["executorSpecs"] == []
    assert time.monotonic() - started < 3


def test_poll_from_a_key_that_never_synced_is_a_typed_error(
    org: Org, server: ServerProcess
) -> None:
    fresh = FakeExecutor(server.url, org.executor_key(unique("unsynced")))
    with pytest.raises(ControlPlaneError) as err:
        fresh.poll({}, wait=5)
    assert err.value.code == "invalid_action"
    with pytest.raises(ControlPlaneError) as err:
        fresh.report(RuntimeEvent(type="node.process.crashed", message="boom"))
    assert err.value.code == "invalid_action"

    # A user session is not an executor: the poll is forbidden, not an empty answer.
    with pytest.raises(GraphQLError) as gql_err:
        org.owner(POLL, {"known": [], "wait": 0})
    assert gql_err.value.code == "forbidden"
    # Nobody at all: unauthenticated.
    with pytest.raises(GraphQLError) as gql_err:
        Client(server.url)(POLL, {"known": [], "wait": 0})
    assert gql_err.value.code == "unauthenticated"
