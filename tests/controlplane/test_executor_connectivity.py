"""Executor sync, heartbeat and freshness, observations, runtime events and the events feed."""

import time
import uuid
from typing import Any

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import (
    EventLevel,
    ExecutorKind,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
)
from tests.support.calls import (
    all_events,
    deploy,
    event_page,
    executor_view,
    get_node,
    wait_until,
)
from tests.support.fleet import FakeExecutor, Org
from tests.support.server import ServerProcess

S = ProcessStatus
HEARTBEAT_TIMEOUT = 3.0  # ServerProcess's default for tests


def observed(revision: int, status: ProcessStatus = S.RUNNING) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status)]
    )


def test_connect_go_silent_and_reconnect(org: Org, server: ServerProcess) -> None:
    ex = FakeExecutor(server.url, org.executor_key())
    result = ex.sync()
    assert result["executor"]["name"] == ex.name and result["rejected"] == []
    view = executor_view(org.owner, str(ex.id))
    assert (view["kind"], view["version"], view["status"]) == ("agent", "0.1.0-test", "ONLINE")
    connected = all_events(org.owner, executorId=ex.id)
    assert [(e["type"], e["level"], e["actorType"]) for e in connected] == [
        ("executor.connected", "INFO", "executor")
    ]
    assert connected[0]["actor"] == f"executor:{ex.name}"

    nid = deploy(org.owner, ex, "ltc-fresh")["id"]
    ex.sync({nid: observed(1)})
    last_sync = time.monotonic()
    node = get_node(org.owner, nid)
    assert (node["phase"], node["stale"]) == ("RUNNING", False)

    # Silence past the heartbeat timeout: offline, one disconnect, nodes stale in their phase.
    offline_at = wait_until(
        lambda: executor_view(org.owner, str(ex.id))["status"] == "OFFLINE" and time.monotonic(),
        timeout=HEARTBEAT_TIMEOUT + 5,
        interval=0.1,
        what="executor offline",
    )
    assert offline_at - last_sync >= HEARTBEAT_TIMEOUT - 0.5, "offline before the timeout"
    wait_until(
        lambda: all_events(org.owner, executorId=ex.id, type="executor.disconnected"),
        timeout=5,
        what="executor.disconnected",
    )
    time.sleep(1.5)  # more sweeps must not record it again
    disconnected = all_events(org.owner, executorId=ex.id, type="executor.disconnected")
    assert [(e["level"], e["actorType"]) for e in disconnected] == [("WARN", "system")]
    node = get_node(org.owner, nid)
    assert (node["phase"], node["stale"], node["observedRevision"]) == ("RUNNING", True, 1)
    assert node["executor"]["status"] == "OFFLINE"
    listed = org.owner("{ nodes { items { id phase stale } } }")["nodes"]["items"]
    assert {"id": nid, "phase": "RUNNING", "stale": True} in listed

    # A sync brings it back: reconnected, fresh again.
    ex.sync({nid: observed(1)})
    node = get_node(org.owner, nid)
    assert (node["phase"], node["stale"], node["executor"]["status"]) == (
        "RUNNING",
        False,
        "ONLINE",
    )
    types = [e["type"] for e in reversed(all_events(org.owner, executorId=ex.id))]
    executor_types = [t for t in types if t.startswith("executor.")]
    assert executor_types == [
        "executor.connected",
        "executor.disconnected",
        "executor.reconnected",
    ]
    ex.sync()
    assert len(all_events(org.owner, executorId=ex.id, type="executor.reconnected")) == 1


def test_kind_is_fixed_on_first_sync(org: Org, server: ServerProcess) -> None:
    key = org.executor_key()
    ex = FakeExecutor(server.url, key)
    ex.sync()
    before = executor_view(org.owner, str(ex.id))
    time.sleep(0.05)
    as_operator = FakeExecutor(server.url, key, name=ex.name, kind=ExecutorKind.OPERATOR)
    with pytest.raises(ControlPlaneError) as err:
        as_operator.sync()
    assert err.value.code == "invalid_input"
    after = executor_view(org.owner, str(ex.id))
    assert after["kind"] == "agent" and after["lastSyncAt"] == before["lastSyncAt"]

    # A key bound to one executor cannot speak for another name.
    impostor = FakeExecutor(server.url, key)
    with pytest.raises(ControlPlaneError) as err:
        impostor.sync()
    assert err.value.code == "forbidden"
    names = [e["name"] for e in org.owner("{ executors { name } }")["executors"]]
    assert names == [ex.name]


def test_bad_observations_are_rejected_and_change_nothing(org: Org, server: ServerProcess) -> None:
    mine = FakeExecutor(server.url, org.executor_key("mine"))
    mine.sync()
    theirs = FakeExecutor(server.url, org.executor_key("theirs"))
    theirs.sync()
    own = deploy(org.owner, mine, "ltc-own")["id"]
    foreign = deploy(org.owner, theirs, "ltc-foreign")["id"]
    mine.sync({own: observed(1, S.STARTING)})
    own_before = get_node(org.owner, own)
    foreign_before = get_node(org.owner, foreign)
    events_before = all_events(org.owner)
    unknown = str(uuid.uuid4())

    result = mine.sync({own: observed(2), foreign: observed(1), unknown: observed(1)})
    rejected = {r["nodeId"]: r["reason"] for r in result["rejected"]}
    assert set(rejected) == {own, foreign, unknown}
    assert "newer" in rejected[own]
    assert "not a node of this executor" in rejected[foreign]
    assert "not a node of this executor" in rejected[unknown]

    own_after = get_node(org.owner, own)
    foreign_after = get_node(org.owner, foreign)
    for before, after in ((own_before, own_after), (foreign_before, foreign_after)):
        assert (after["observed"], after["phase"], after["observedRevision"]) == (
            before["observed"],
            before["phase"],
            before["observedRevision"],
        )
    assert foreign_after["observed"] is None and foreign_after["phase"] == "PROVISIONING"
    assert own_after["phase"] == "STARTING"
    assert all_events(org.owner) == events_before

    # A good observation next to a bad one is still taken.
    result = mine.sync({own: observed(1), foreign: observed(1)})
    assert [r["nodeId"] for r in result["rejected"]] == [foreign]
    assert get_node(org.owner, own)["phase"] == "RUNNING"
    assert get_node(org.owner, foreign)["observed"] is None


def test_runtime_events_are_attributed_and_scoped(org: Org, server: ServerProcess) -> None:
    mine = FakeExecutor(server.url, org.executor_key("mine"))
    mine.sync()
    theirs = FakeExecutor(server.url, org.executor_key("theirs"))
    theirs.sync()
    own = deploy(org.owner, mine, "ltc-own")["id"]
    foreign = deploy(org.owner, theirs, "ltc-foreign")["id"]

    accepted = mine.report(
        RuntimeEvent(
            node_id=uuid.UUID(own),
            type="node.process.crashed",
            level=EventLevel.ERROR,
            message="litecoind exited with status 1",
            payload={"role": "node", "exitCode": 1},
        ),
        RuntimeEvent(type="executor.disk.low", level=EventLevel.WARN, message="disk full"),
        RuntimeEvent(node_id=uuid.UUID(foreign), type="node.process.crashed", message="not yours"),
        RuntimeEvent(node_id=uuid.uuid4(), type="node.process.crashed", message="nobody's"),
    )
    assert accepted == 2

    on_node = all_events(org.owner, nodeId=own, type="node.process.crashed")
    assert len(on_node) == 1
    ev = on_node[0]
    assert (ev["source"], ev["level"], ev["message"]) == (
        "runtime",
        "ERROR",
        "litecoind exited with status 1",
    )
    assert (ev["actorType"], ev["actor"]) == ("executor", f"executor:{mine.name}")
    assert (ev["executorId"], ev["nodeId"], ev["nodeName"]) == (mine.id, own, "ltc-own")
    assert ev["payload"] == {"role": "node", "exitCode": 1}

    unattached = all_events(org.owner, type="executor.disk.low")
    assert [(e["source"], e["nodeId"], e["executorId"]) for e in unattached] == [
        ("runtime", None, mine.id)
    ]
    assert all_events(org.owner, nodeId=foreign, type="node.process.crashed") == []
    runtime = [e for e in all_events(org.owner) if e["source"] == "runtime"]
    assert {e["message"] for e in runtime} == {"litecoind exited with status 1", "disk full"}

    # The executor reads only its own executor's events.
    as_theirs = all_events(org.owner.as_(theirs.api_key))
    assert as_theirs and all(e["executorId"] == theirs.id for e in as_theirs)


def _page_through(org: Org, page_size: int, **flt: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        page = event_page(org.owner, flt, first=page_size, after=after)
        pages += 1
        assert len(page["items"]) <= page_size
        if page["pageInfo"]["hasNextPage"]:
            assert len(page["items"]) == page_size
            assert page["pageInfo"]["endCursor"] == page["items"][-1]["id"]
        items += page["items"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert pages < 100, "pagination does not end"
    return items


def test_events_pagination_and_filters(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-noisy")["id"]
    levels = [EventLevel.INFO, EventLevel.WARN, EventLevel.ERROR]
    kinds = ["node.process.crashed", "node.process.restarted", "node.sync.stalled"]
    reported = [
        RuntimeEvent(
            node_id=uuid.UUID(nid),
            type=kinds[i % 3],
            level=levels[(i // 3) % 3],
            message=f"event {i:03d}",
            payload={"i": i},
        )
        for i in range(67)
    ]
    # In two calls, so a page boundary need not coincide with a call boundary.
    assert executor.report(*reported[:40]) == 40
    assert executor.report(*reported[40:]) == 27

    everything = [e for e in _page_through(org, 9, nodeId=nid) if e["source"] == "runtime"]
    ids = [int(e["id"]) for e in everything]
    assert len(ids) == len(set(ids)) == 67, "duplicates or gaps across pages"
    assert ids == sorted(ids, reverse=True), "not newest first"
    assert [e["payload"]["i"] for e in everything] == list(range(66, -1, -1))
    created = [e["createdAt"] for e in everything]
    assert created == sorted(created, reverse=True)

    # Whole-organization feed: the same events, in the same order, among the rest.
    whole = [int(e["id"]) for e in _page_through(org, 13)]
    assert len(whole) == len(set(whole)) and whole == sorted(whole, reverse=True)
    assert set(ids) <= set(whole)

    errors = _page_through(org, 5, nodeId=nid, level="ERROR")
    expected_errors = [i for i in range(66, -1, -1) if levels[(i // 3) % 3] is EventLevel.ERROR]
    assert [e["payload"].get("i") for e in errors] == expected_errors
    assert {e["level"] for e in errors} == {"ERROR"}

    crashed = _page_through(org, 4, nodeId=nid, type="node.process.crashed")
    assert [e["payload"]["i"] for e in crashed] == [i for i in range(66, -1, -1) if i % 3 == 0]
    both = _page_through(org, 3, nodeId=nid, type="node.process.crashed", level="WARN")
    assert [e["payload"]["i"] for e in both] == [
        i for i in range(66, -1, -1) if i % 3 == 0 and levels[(i // 3) % 3] is EventLevel.WARN
    ]
    prefixed = _page_through(org, 20, nodeId=nid, type="node.process.*")
    assert {e["type"] for e in prefixed} == {"node.process.crashed", "node.process.restarted"}
    assert len(prefixed) == 45
    assert _page_through(org, 10, nodeId=nid, type="node.sync") == []  # exact, not a prefix

    # A cursor that is not one of ours gives an empty page, not an error or everything.
    garbage = event_page(org.owner, {"nodeId": nid}, first=10, after="not-a-cursor")
    assert garbage["items"] == [] and garbage["pageInfo"]["hasNextPage"] is False
    # Another organization sees none of it.
    stranger = org.admin(
        "query($f: EventFilter) { events(filter: $f) { items { id } } }", {"f": {"nodeId": nid}}
    )
    assert stranger["events"]["items"] == []
