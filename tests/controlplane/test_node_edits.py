"""Editing and rolling back a node over HTTP against a real server, on SQLite and PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import all_events, deploy, get_node, revisions
from tests.support.fleet import LITECOIN_SPEC, FakeExecutor, Org
from tests.support.gql import Client, GraphQLError

UPDATE = """
mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision spec desiredState } }"""
ROLLBACK = """
mutation($id: UUID!, $to: Int!, $expected: Int, $desired: DesiredState) {
  rollbackNode(nodeId: $id, toRevision: $to, expectedRevision: $expected, desiredState: $desired) {
    id revision spec desiredState } }"""
S = ProcessStatus
DELETE = "mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }"


def edit(client: Client, node_id: str, **fields: Any) -> dict[str, Any]:
    node: dict[str, Any] = client(UPDATE, {"input": {"nodeId": node_id, **fields}})["updateNode"]
    return node


def rollback(client: Client, node_id: str, to: int, **more: Any) -> dict[str, Any]:
    node: dict[str, Any] = client(ROLLBACK, {"id": node_id, "to": to, **more})["rollbackNode"]
    return node


def refused(call: Any, *args: Any, **kwargs: Any) -> GraphQLError:
    with pytest.raises(GraphQLError) as err:
        call(*args, **kwargs)
    return err.value


def test_version_upgrade_is_a_revision_with_a_diff_and_an_event(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-edit")["id"]
    node = edit(
        org.owner,
        nid,
        clients={"node": {"name": "litecoind", "version": "0.21.3"}},
        storage={"size": "200Gi"},
        expectedRevision=1,
    )
    assert node["revision"] == 2
    assert node["spec"]["clients"]["node"] == {"name": "litecoind", "version": "0.21.3"}
    assert node["spec"]["storage"]["size"] == "200Gi"
    assert revisions(org.owner, nid)[-1]["cause"] == "configuration updated"
    (event,) = all_events(org.owner, nodeId=nid, type="node.updated")
    assert event["payload"] == {
        "revision": 2,
        "changed": ["clients.node.version", "storage.size"],
    }
    assert "2 changes" in event["message"]
    # The same edit again changes nothing and writes nothing.
    assert (
        edit(org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}})[
            "revision"
        ]
        == 2
    )


def test_refused_edits_list_every_problem_and_write_nothing(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-refused")["id"]
    err = refused(
        edit,
        org.owner,
        nid,
        clients={"node": {"name": "litecoind", "version": "9.9.9"}},
    )
    assert err.code == "invalid_node_config"
    assert [p["path"] for p in err.extensions["problems"]] == ["clients.node"]
    assert "9.9.9" in err.extensions["problems"][0]["message"]

    err = refused(edit, org.owner, nid, storage={"size": "10Gi"})
    assert err.code == "invalid_node_config"
    assert [p["path"] for p in err.extensions["problems"]] == ["storage.size"]

    spec = {**get_node(org.owner, nid)["spec"], "network": "testnet", "storage": {"size": "1Gi"}}
    err = refused(edit, org.owner, nid, spec=spec)
    assert [p["path"] for p in err.extensions["problems"]] == ["network", "storage.size"]

    err = refused(edit, org.owner, nid, clients={"node": {"name": "bitcoind", "version": "1"}})
    assert [p["path"] for p in err.extensions["problems"]] == ["clients.node.name"]

    err = refused(edit, org.owner, nid, overrides={"args": {"node": ["-rpcport=1"]}})
    assert err.code == "invalid_node_config"  # a managed flag, as at deploy

    assert get_node(org.owner, nid)["revision"] == 1
    assert [r["revision"] for r in revisions(org.owner, nid)] == [1]
    # Members read, but do not edit.
    member = org.add_member("MEMBER")
    assert refused(edit, member, nid, resources={"cpuLimit": "2"}).code == "forbidden"


def test_spec_file_edit_keeps_the_lifecycle_fields(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-specfile")["id"]
    org.owner(
        "mutation($id: UUID!) { requestNodeLifecycleAction(nodeId: $id, action: STOP) { id } }",
        {"id": nid},
    )
    spec = {
        **get_node(org.owner, nid)["spec"],
        "clients": {"node": {"name": "litecoind", "version": "0.21.3"}},
        "desiredState": "running",
        "restartGeneration": 7,
    }
    node = edit(org.owner, nid, spec=spec, expectedRevision=2)
    assert node["revision"] == 3
    assert node["desiredState"] == "STOPPED"
    assert node["spec"]["restartGeneration"] == 0
    assert node["spec"]["clients"]["node"]["version"] == "0.21.3"


def test_rollback_writes_a_new_revision_equal_to_the_old_one(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-rollback")["id"]
    executor.observe(nid, 1, ProcessStatus.RUNNING)
    first = get_node(org.owner, nid)["spec"]
    edit(org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}})
    edit(org.owner, nid, resources={"cpuLimit": "2"}, storage={"size": "500Gi"})
    org.owner(
        "mutation($id: UUID!) { requestNodeLifecycleAction(nodeId: $id, action: STOP) { id } }",
        {"id": nid},
    )  # revision 4

    node = rollback(org.owner, nid, 1, expected=4)
    assert node["revision"] == 5
    # Revision 1's spec, with the desired state as it is now and the grown volume kept.
    assert node["spec"] == {
        **first,
        "desiredState": "stopped",
        "storage": {**first["storage"], "size": "500Gi"},
    }
    history = revisions(org.owner, nid)
    assert [(h["revision"], h["cause"]) for h in history] == [
        (1, "created"),
        (2, "configuration updated"),
        (3, "configuration updated"),
        (4, "lifecycle: stop"),
        (5, "rollback"),
    ]
    (event,) = all_events(org.owner, nodeId=nid, type="node.rolled_back")
    assert event["payload"]["toRevision"] == 1 and event["payload"]["revision"] == 5
    assert event["payload"]["changed"] == ["clients.node.version", "resources.cpuLimit"]

    # Rolling back to revision 2, asking for it to run.
    node = rollback(org.owner, nid, 2, desired="RUNNING")
    assert node["revision"] == 6 and node["desiredState"] == "RUNNING"
    assert node["spec"]["clients"]["node"]["version"] == "0.21.3"
    # To what it already is: nothing written.
    assert rollback(org.owner, nid, 6)["revision"] == 6

    err = refused(rollback, org.owner, nid, 99)
    assert err.code == "not_found"
    err = refused(rollback, org.owner, nid, 1, expected=5)
    assert err.code == "revision_conflict" and err.extensions["currentRevision"] == 6
    # Another organization sees no such node.
    assert refused(rollback, org.admin, nid, 1).code == "not_found"


def test_two_edits_at_the_same_revision_exactly_one_wins(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-race")["id"]
    admin = org.add_member("ADMIN")
    calls = [
        (org.owner, {"clients": {"node": {"name": "litecoind", "version": "0.21.3"}}}),
        (admin, {"resources": {"cpuLimit": "3"}}),
        (org.owner, {"storage": {"size": "300Gi"}}),
        (admin, "rollback"),
    ] * 2
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[Client, Any]) -> Any:
        client, change = call
        barrier.wait()
        try:
            if change == "rollback":
                return rollback(client, nid, 1, expected=1)
            return edit(client, nid, expectedRevision=1, **change)
        except GraphQLError as err:
            return err

    # A rollback to revision 1 at revision 1 writes nothing (when it runs first) or conflicts:
    # it must never make a second revision beside the winning edit.
    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(one, calls))
    written = [r for r in results if isinstance(r, dict) and r["revision"] == 2]
    failed = [r for r in results if isinstance(r, GraphQLError)]
    assert len(written) == 1, results
    assert {e.code for e in failed} == {"revision_conflict"}
    # Every loser either conflicted or (the rollback to the current revision) wrote nothing.
    assert all(isinstance(r, GraphQLError) or r["revision"] in (1, 2) for r in results)
    assert [r["revision"] for r in revisions(org.owner, nid)] == [1, 2]


def test_edits_and_rollbacks_of_a_deleting_node_are_refused(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-deleting")["id"]
    edit(org.owner, nid, resources={"cpuLimit": "2"})
    org.owner(DELETE, {"id": nid})
    err = refused(
        edit, org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}}
    )
    assert err.code == "node_deleting"
    assert refused(rollback, org.owner, nid, 1).code == "node_deleting"


def observed(revision: int, status: ProcessStatus, **extra: Any) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status)], **extra
    )


AUTO = {"rollout": {"healthWindowSeconds": 30, "autoRollback": True}}


def test_failed_revision_is_rolled_back_to_the_last_healthy_one(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-auto", spec={**LITECOIN_SPEC, **AUTO})["id"]
    executor.sync({nid: observed(1, S.RUNNING, healthy_revision=1)})
    good = get_node(org.owner, nid)["spec"]
    edit(org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}})
    reason = "revision 2 did not reach running or syncing within 30 s (node error: bad binary)"
    executor.sync({nid: observed(2, S.ERROR, healthy_revision=1, apply_error=reason)})

    node = get_node(org.owner, nid)
    assert node["revision"] == 3
    assert node["spec"] == good
    history = revisions(org.owner, nid)
    assert [(h["revision"], h["cause"], h["author"]) for h in history][-1] == (
        3,
        "auto-rollback",
        "nodeplane",
    )
    (event,) = all_events(org.owner, nodeId=nid, type="node.auto_rolled_back")
    assert event["level"] == "WARN"
    assert event["payload"] == {
        "revision": 3,
        "failedRevision": 2,
        "toRevision": 1,
        "reason": reason,
    }
    assert reason in event["message"]

    # The same failure reported again is of an older revision now: nothing more is written.
    executor.sync({nid: observed(2, S.ERROR, healthy_revision=1, apply_error=reason + ".")})
    assert get_node(org.owner, nid)["revision"] == 3
    executor.sync({nid: observed(3, S.RUNNING, healthy_revision=3)})
    assert get_node(org.owner, nid)["phase"] == "RUNNING"


def test_without_auto_rollback_a_failed_revision_stays_in_error(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-noauto")["id"]
    executor.sync({nid: observed(1, S.RUNNING, healthy_revision=1)})
    edit(org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}})
    executor.sync({nid: observed(2, S.ERROR, healthy_revision=1, apply_error="did not start")})
    node = get_node(org.owner, nid)
    assert (node["revision"], node["phase"]) == (2, "ERROR")
    assert all_events(org.owner, nodeId=nid, type="node.auto_rolled_back") == []


def test_no_healthy_revision_means_no_auto_rollback(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-never", spec={**LITECOIN_SPEC, **AUTO})["id"]
    executor.sync({nid: observed(1, S.ERROR, apply_error="never started")})
    assert get_node(org.owner, nid)["revision"] == 1


def test_concurrent_failure_reports_roll_back_once(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-auto-race", spec={**LITECOIN_SPEC, **AUTO})["id"]
    executor.sync({nid: observed(1, S.RUNNING, healthy_revision=1)})
    edit(org.owner, nid, clients={"node": {"name": "litecoind", "version": "0.21.3"}})
    reports = [
        observed(2, S.ERROR, healthy_revision=1, apply_error=f"failed (report {i})")
        for i in range(6)
    ]
    barrier = threading.Barrier(len(reports))

    def one(report: ObservedNodeState) -> None:
        barrier.wait()
        executor.sync({nid: report})

    with ThreadPoolExecutor(len(reports)) as pool:
        list(pool.map(one, reports))
    assert [h["cause"] for h in revisions(org.owner, nid)] == [
        "created",
        "configuration updated",
        "auto-rollback",
    ]
    assert len(all_events(org.owner, nodeId=nid, type="node.auto_rolled_back")) == 1


def test_rollout_policy_is_edited_key_by_key(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, "ltc-rollout")["id"]
    assert get_node(org.owner, nid)["spec"]["rollout"] == {
        "healthWindowSeconds": 600,
        "autoRollback": False,
    }
    node = edit(org.owner, nid, rollout={"autoRollback": True})
    assert node["spec"]["rollout"] == {"healthWindowSeconds": 600, "autoRollback": True}
    err = refused(edit, org.owner, nid, rollout={"healthWindowSeconds": 0})
    assert err.code == "invalid_node_config"


PREVIEW = """
query($input: UpdateNodeInput!) { nodeUpdatePreview(input: $input) { path before after } }"""


def test_preview_shows_the_changes_and_refuses_as_the_edit_would(
    org: Org, executor: FakeExecutor
) -> None:
    nid = deploy(org.owner, executor, "ltc-preview")["id"]
    spec = get_node(org.owner, nid)["spec"]
    proposed = {
        **spec,
        "clients": {"node": {"name": "litecoind", "version": "0.21.3"}},
        "resources": {**spec["resources"], "cpuLimit": "2"},
        "rollout": {**spec["rollout"], "autoRollback": True},
    }
    changes = org.owner(PREVIEW, {"input": {"nodeId": nid, "spec": proposed}})["nodeUpdatePreview"]
    assert changes == [
        {"path": "clients.node.version", "before": "0.21.4", "after": "0.21.3"},
        {"path": "resources.cpuLimit", "before": None, "after": "2"},
        {"path": "rollout.autoRollback", "before": False, "after": True},
    ]
    assert get_node(org.owner, nid)["revision"] == 1  # nothing written
    with pytest.raises(GraphQLError) as err:
        org.owner(PREVIEW, {"input": {"nodeId": nid, "storage": {"size": "1Gi"}}})
    assert err.value.code == "invalid_node_config"
    with pytest.raises(GraphQLError) as err:
        org.owner(PREVIEW, {"input": {"nodeId": nid, "spec": proposed, "expectedRevision": 9}})
    assert err.value.code == "revision_conflict"
    member = org.add_member("MEMBER")
    with pytest.raises(GraphQLError) as err:
        member(PREVIEW, {"input": {"nodeId": nid, "spec": proposed}})
    assert err.value.code == "forbidden"
