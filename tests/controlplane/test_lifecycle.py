"""The whole node lifecycle over HTTP against a real server, on SQLite and PostgreSQL."""

from typing import Any

import pytest

from nodeplane.protocol import ProcessStatus
from tests.support.fleet import (
    CREATE_NODE,
    EVENTS,
    LIFECYCLE,
    LITECOIN_SPEC,
    NODE,
    FakeExecutor,
    Org,
)
from tests.support.gql import Client, GraphQLError

S = ProcessStatus


def deploy(
    client: Client, executor: FakeExecutor, name: str = "ltc-1", spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = client(
        CREATE_NODE,
        {"input": {"executorId": executor.id, "name": name, "spec": spec or LITECOIN_SPEC}},
    )
    node: dict[str, Any] = data["createNode"]
    return node


def get(client: Client, node_id: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = client(NODE, {"id": node_id})["node"]
    return node


def phase(client: Client, node_id: str) -> str:
    node = get(client, node_id)
    assert node is not None
    return str(node["phase"])


def events(client: Client, **flt: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client(EVENTS, {"filter": flt, "first": 200})["events"]["items"]
    return items


def act(client: Client, node_id: str, action: str, expected: int | None = None) -> dict[str, Any]:
    node: dict[str, Any] = client(
        LIFECYCLE, {"id": node_id, "action": action, "expected": expected}
    )["requestNodeLifecycleAction"]
    return node


def test_deploy_observe_and_every_phase(org: Org, executor: FakeExecutor) -> None:
    node = deploy(org.owner, executor)
    nid = node["id"]
    assert node["revision"] == 1
    assert node["phase"] == "PROVISIONING"
    assert node["desiredState"] == "RUNNING"
    assert node["pendingChange"] is True
    assert node["stale"] is False

    # The executor receives revision 1 at once from the poll.
    specs = executor.poll({}, wait=0)
    assert [(s.name, s.revision, s.deleted) for s in specs] == [("ltc-1", 1, False)]
    assert specs[0].spec is not None and specs[0].spec.chain == "litecoin"

    executor.observe(nid, 0, S.STARTING)
    assert phase(org.owner, nid) == "CONFIGURING"
    executor.observe(nid, 1, S.STARTING)
    assert phase(org.owner, nid) == "STARTING"
    executor.observe(nid, 1, S.SYNCING)
    assert phase(org.owner, nid) == "SYNCING"
    executor.observe(nid, 1, S.RUNNING)
    got = get(org.owner, nid)
    assert got is not None
    assert (
        got["phase"] == "RUNNING" and got["observedRevision"] == 1 and got["pendingChange"] is False
    )
    executor.observe(nid, 1, S.ERROR)
    assert phase(org.owner, nid) == "ERROR"
    executor.observe(nid, 1, S.STOPPED)
    assert phase(org.owner, nid) == "ERROR"  # stopped while desired running and current
    executor.observe(nid, 1, S.RUNNING, apply_error="binary not found")
    assert phase(org.owner, nid) == "ERROR"
    executor.observe(nid, 1, S.RUNNING)

    stopped = act(org.owner, nid, "STOP")
    assert stopped["revision"] == 2 and stopped["desiredState"] == "STOPPED"
    assert stopped["phase"] == "STOPPING"
    executor.observe(nid, 2, S.STOPPING)
    assert phase(org.owner, nid) == "STOPPING"
    executor.observe(nid, 2, S.STOPPED)
    assert phase(org.owner, nid) == "STOPPED"

    transitions = [
        (e["payload"]["from"], e["payload"]["to"])
        for e in reversed(events(org.owner, nodeId=nid, type="node.lifecycle.transition"))
    ]
    assert transitions == [
        ("provisioning", "configuring"),
        ("configuring", "starting"),
        ("starting", "syncing"),
        ("syncing", "running"),
        ("running", "error"),
        ("error", "running"),
        ("running", "stopping"),
        ("stopping", "stopped"),
    ]


def test_stop_start_restart_revisions_and_idempotent_stop(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor)["id"]
    executor.observe(nid, 1, S.RUNNING)

    assert act(org.owner, nid, "STOP")["revision"] == 2
    executor.observe(nid, 2, S.STOPPED)
    before = events(org.owner, nodeId=nid)
    again = act(org.owner, nid, "STOP")
    assert again["revision"] == 2  # a second stop of a stopped node writes nothing
    assert events(org.owner, nodeId=nid) == before
    revisions = org.owner(
        "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision } }", {"id": nid}
    )
    assert [r["revision"] for r in revisions["nodeRevisions"]] == [1, 2]

    started = act(org.owner, nid, "START")
    assert started["revision"] == 3 and started["desiredState"] == "RUNNING"
    restarted = act(org.owner, nid, "RESTART")
    assert restarted["revision"] == 4
    assert restarted["spec"]["restartGeneration"] == 1

    requested = [
        e for e in reversed(events(org.owner, nodeId=nid, type="node.lifecycle.requested"))
    ]
    owner_email = org.owner("{ me { email } }")["me"]["email"]
    assert [e["payload"]["action"] for e in requested] == ["stop", "start", "restart"]
    assert all(e["actor"] == owner_email and e["actorType"] == "user" for e in requested)

    history = org.owner(
        "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision author cause } }", {"id": nid}
    )["nodeRevisions"]
    assert [(h["revision"], h["cause"]) for h in history] == [
        (1, "created"),
        (2, "lifecycle: stop"),
        (3, "lifecycle: start"),
        (4, "lifecycle: restart"),
    ]
    assert {h["author"] for h in history} == {owner_email}
    diff = org.owner(
        "query($id: UUID!) { nodeRevisionDiff(nodeId: $id, fromRevision: 3, toRevision: 4) { path before after } }",
        {"id": nid},
    )["nodeRevisionDiff"]
    assert diff == [{"path": "restartGeneration", "before": 0, "after": 1}]

    # The executor sees only what is newer than what it holds.
    assert [s.revision for s in executor.poll({nid: 3})] == [4]
    assert executor.poll({nid: 4}) == []


def test_stale_expected_revision_is_refused_and_writes_nothing(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor)["id"]
    act(org.owner, nid, "STOP", expected=1)
    before = events(org.owner, nodeId=nid)
    with pytest.raises(GraphQLError) as err:
        act(org.owner, nid, "START", expected=1)
    assert err.value.code == "revision_conflict"
    assert err.value.extensions["currentRevision"] == 2
    node = get(org.owner, nid)
    assert node is not None and node["revision"] == 2 and node["desiredState"] == "STOPPED"
    assert events(org.owner, nodeId=nid) == before


def test_delete_tombstone_teardown_and_history_survives(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor)["id"]
    executor.observe(nid, 1, S.RUNNING)
    deleted = org.owner(
        "mutation($id: UUID!) { deleteNode(nodeId: $id, retainData: true) { phase retainData deletedAt } }",
        {"id": nid},
    )["deleteNode"]
    assert deleted["phase"] == "DELETING" and deleted["retainData"] is True and deleted["deletedAt"]

    for action in ("STOP", "START", "RESTART"):
        with pytest.raises(GraphQLError) as err:
            act(org.owner, nid, action)
        assert err.value.code == "node_deleting"
    with pytest.raises(GraphQLError) as err:
        org.owner("mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }", {"id": nid})
    assert err.value.code == "node_deleting"

    # The executor holding revision 1 gets the tombstone, once.
    tomb = executor.poll({nid: 1}, wait=0)
    assert [(t.node_id.hex, t.deleted, t.retain_data) for t in tomb] == [
        (nid.replace("-", ""), True, True)
    ]
    assert executor.poll({nid: 1}, deleted={nid}) == []
    assert executor.confirm_teardown(nid) is True

    assert get(org.owner, nid) is None
    listed = org.owner("{ nodes { items { id } } }")["nodes"]["items"]
    assert nid not in [n["id"] for n in listed]
    history = org.owner(
        "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision } }", {"id": nid}
    )
    assert [r["revision"] for r in history["nodeRevisions"]] == [1]
    types = [e["type"] for e in reversed(events(org.owner, nodeId=nid))]
    assert types[0] == "node.created"
    assert "node.deleted" in types and types[-1] == "node.removed"
    assert executor.confirm_teardown(nid) is False  # idempotent

    # The name is free again on that executor.
    assert deploy(org.owner, executor)["revision"] == 1


def test_update_node_makes_a_revision_with_diff(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor)["id"]
    updated = org.owner(
        """mutation($input: UpdateNodeInput!) { updateNode(input: $input) { revision spec } }""",
        {
            "input": {
                "nodeId": nid,
                "overrides": {"args": {"node": ["-txindex=1"]}},
                "resources": {"cpuLimit": "2"},
                "cause": "enable txindex",
            }
        },
    )["updateNode"]
    assert updated["revision"] == 2
    assert updated["spec"]["overrides"]["args"] == {"node": ["-txindex=1"]}
    history = org.owner(
        "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision cause } }", {"id": nid}
    )["nodeRevisions"]
    assert history[-1] == {"revision": 2, "cause": "enable txindex"}
    diff = org.owner(
        "query($id: UUID!) { nodeRevisionDiff(nodeId: $id, fromRevision: 1, toRevision: 2) { path before after } }",
        {"id": nid},
    )["nodeRevisionDiff"]
    assert {d["path"]: d["after"] for d in diff} == {
        "overrides.args.node": ["-txindex=1"],
        "resources.cpuLimit": "2",
    }
