"""Executor identity (issue 7, finding 5): an executor is bound to the key that registered it.

A fresh executor key naming an executor that belongs to another key is refused — no specs, no
tombstones, no capabilities overwritten, no forged observations or events — and the attempt is
in the events feed. Another key takes an executor over only when an owner or admin says so:
`rebindExecutor` (revoking the keys bound before) or a key created for that executor.
Against a real server, on SQLite and PostgreSQL.
"""

import uuid
from typing import Any

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import (
    EventLevel,
    ExecutorCapabilities,
    ObservedNodeState,
    ProcessStatus,
    RuntimeEvent,
)
from tests.support.calls import all_events, deploy, get_node
from tests.support.fleet import FakeExecutor, Org, make_org, running, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.support.state import org_state

CREATE_KEY = """mutation($n: String!, $k: ApiKeyKind!) {
  createApiKey(name: $n, kind: $k) { apiKey { id name executorId } secret } }"""
CREATE_KEY_FOR = """mutation($n: String!, $k: ApiKeyKind!, $e: UUID) {
  createApiKey(name: $n, kind: $k, executorId: $e) { apiKey { id name executorId } secret } }"""
REBIND = """mutation($e: UUID!, $k: UUID!) {
  rebindExecutor(executorId: $e, apiKeyId: $k) {
    executor { id name } apiKey { id executorId enabled } revokedKeys { id enabled revokedAt } } }"""
REVOKE = "mutation($id: UUID!) { revokeApiKey(id: $id) { id } }"
EXECUTOR = "query($id: UUID!) { executor(id: $id) { id name capabilities lastSyncAt } }"
KEYS = "{ apiKeys { id name enabled executorId } }"
DELETE = "mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }"


def new_key(
    client: Client, name: str, kind: str = "EXECUTOR", executor_id: str | None = None
) -> tuple[str, str]:
    """(key id, secret) of a new key."""
    if executor_id is None:
        data = client(CREATE_KEY, {"n": name, "k": kind})["createApiKey"]
    else:
        data = client(CREATE_KEY_FOR, {"n": name, "k": kind, "e": executor_id})["createApiKey"]
    return data["apiKey"]["id"], data["secret"]


def refused(call: Any) -> ControlPlaneError:
    with pytest.raises(ControlPlaneError) as err:
        call()
    return err.value


def gql_error(client: Client, query: str, variables: dict[str, Any]) -> GraphQLError:
    with pytest.raises(GraphQLError) as err:
        client(query, variables)
    return err.value


def without(state: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {**state, "events": [e for e in state["events"] if e["type"] != event_type]}


def test_a_new_key_cannot_take_over_an_executor_by_name(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    held = deploy(org.owner, executor, "ltc-held")["id"]
    executor.observe(held, 1, ProcessStatus.RUNNING)
    doomed = deploy(org.owner, executor, "ltc-doomed")["id"]
    org.owner(DELETE, {"id": doomed})  # a tombstone the real host has not torn down yet
    key_id, secret = new_key(org.owner, "stolen-laptop")
    capabilities_before = org.owner(EXECUTOR, {"id": executor.id})["executor"]
    before = org_state(org, server.database_url)

    thief = FakeExecutor(
        server.url, secret, name=executor.name, capabilities=ExecutorCapabilities()
    )
    forged = {held: ObservedNodeState(revision=1, processes=[running()], apply_error="forged")}
    err = refused(lambda: thief.sync(forged))
    assert err.code == "forbidden"
    assert "bound to another key" in err.message
    # Still nothing for this key: no specs, no tombstones, no events, no teardown.
    assert refused(lambda: thief.poll({}, wait=0)).code == "invalid_action"
    assert refused(lambda: thief.poll({held: 0, doomed: 0}, wait=0)).code == "invalid_action"
    event = RuntimeEvent(node_id=uuid.UUID(held), type="node.process.crashed", message="forged")
    assert refused(lambda: thief.report(event)).code == "invalid_action"
    assert refused(lambda: thief.confirm_teardown(doomed)).code == "invalid_action"
    refused(lambda: thief.sync(forged))  # a host retrying

    after = org_state(org, server.database_url)
    assert without(after, "executor.bind_refused") == {
        **before,
        "rows": {**before["rows"], "events": before["rows"]["events"] + 1},
    }
    assert org.owner(EXECUTOR, {"id": executor.id})["executor"] == capabilities_before
    node = get_node(org.owner, held)
    assert node["observed"]["applyError"] is None and node["phase"] == "RUNNING"
    keys = {k["id"]: k for k in org.owner(KEYS)["apiKeys"]}
    assert keys[key_id]["executorId"] is None and keys[key_id]["enabled"]

    # One event (per key and executor per hour, however often the host retries), for admins.
    [attempt] = all_events(org.owner, type="executor.bind_refused")
    assert (attempt["level"], attempt["executorId"]) == ("WARN", executor.id)
    assert attempt["payload"] == {"keyId": key_id, "keyName": "stolen-laptop"}
    assert "stolen-laptop" in attempt["message"] and executor.name in attempt["message"]

    # The real host carries on, untouched.
    assert executor.sync()["executor"]["id"] == executor.id
    assert {s.node_id for s in executor.poll({})} == {uuid.UUID(held), uuid.UUID(doomed)}


def test_a_new_key_may_still_register_a_new_name(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    _, secret = new_key(org.owner, "second-host")
    other = FakeExecutor(server.url, secret)
    assert other.sync()["executor"]["name"] == other.name != executor.name


def test_rebind_executor_moves_the_name_and_revokes_the_old_keys(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    held = deploy(org.owner, executor, "ltc-moved")["id"]
    old_keys = [k["id"] for k in org.owner(KEYS)["apiKeys"] if k["executorId"] == executor.id]
    key_id, secret = new_key(org.owner, "rebuilt-host")
    newcomer = FakeExecutor(server.url, secret, name=executor.name)
    refused(newcomer.sync)

    admin = org.add_member("ADMIN")
    result = admin(REBIND, {"e": executor.id, "k": key_id})["rebindExecutor"]
    assert result["executor"] == {"id": executor.id, "name": executor.name}
    assert result["apiKey"] == {"id": key_id, "executorId": executor.id, "enabled": True}
    assert [k["id"] for k in result["revokedKeys"]] == old_keys
    assert all(not k["enabled"] and k["revokedAt"] for k in result["revokedKeys"])

    # The new key is the executor now; the old one no longer works at all.
    assert newcomer.sync()["executor"]["id"] == executor.id
    assert [str(s.node_id) for s in newcomer.poll({})] == [held]
    assert refused(executor.sync).code == "unauthenticated"

    [event] = all_events(org.owner, type="executor.rebound")
    assert event["executorId"] == executor.id
    assert event["payload"]["keyId"] == key_id
    assert event["payload"]["revokedKeyIds"] == old_keys
    assert "rebuilt-host" in event["message"]
    revoked = all_events(org.owner, type="apikey.revoked")
    assert sorted(e["payload"]["keyId"] for e in revoked) == sorted(old_keys)


def test_rebind_executor_refusals_write_nothing(
    org: Org, executor: FakeExecutor, server: ServerProcess, system_admin: Client
) -> None:
    other_org = make_org(server.url, system_admin)
    foreign_key, _ = new_key(other_org.owner, "foreign")
    foreign_host = FakeExecutor(server.url, other_org.executor_key())
    foreign_host.sync()
    personal, _ = new_key(org.owner, "mine", kind="PERSONAL")
    revoked, _ = new_key(org.owner, "old")
    org.owner(REVOKE, {"id": revoked})
    elsewhere = FakeExecutor(server.url, org.executor_key("elsewhere"))
    elsewhere.sync()
    bound_elsewhere = next(
        k["id"] for k in org.owner(KEYS)["apiKeys"] if k["executorId"] == elsewhere.id
    )
    spare, _ = new_key(org.owner, "spare")
    member = org.add_member("MEMBER")
    before = org_state(org, server.database_url)

    cases: list[tuple[Client, str, str, str, str | None]] = [
        (member, executor.id, spare, "forbidden", None),
        (org.owner, executor.id, foreign_key, "not_found", "apiKeyId"),
        (org.owner, str(foreign_host.id), spare, "not_found", "executorId"),
        (org.owner, str(uuid.uuid4()), spare, "not_found", "executorId"),
        (org.owner, executor.id, str(uuid.uuid4()), "not_found", "apiKeyId"),
        (org.owner, executor.id, personal, "invalid_input", "apiKeyId"),
        (org.owner, executor.id, revoked, "invalid_input", "apiKeyId"),
        (org.owner, executor.id, bound_elsewhere, "invalid_input", "apiKeyId"),
    ]
    for client, executor_id, key_id, code, field in cases:
        err = gql_error(client, REBIND, {"e": executor_id, "k": key_id})
        assert (err.code, err.extensions.get("field")) == (code, field), (executor_id, key_id)
    assert org_state(org, server.database_url) == before
    executor.sync()


def test_a_key_created_for_an_executor_is_bound_to_it(
    org: Org, executor: FakeExecutor, server: ServerProcess, system_admin: Client
) -> None:
    key_id, secret = new_key(org.owner, "rotated", executor_id=executor.id)
    second = FakeExecutor(server.url, secret, name=executor.name)
    assert second.sync()["executor"]["id"] == executor.id
    # Key rotation: the old key keeps working until someone revokes it.
    assert executor.sync()["executor"]["id"] == executor.id
    # It speaks for that executor only.
    assert refused(FakeExecutor(server.url, secret).sync).code == "forbidden"

    [created] = [
        e for e in all_events(org.owner, type="apikey.created") if e["payload"]["keyId"] == key_id
    ]
    assert created["executorId"] == executor.id
    assert created["payload"]["executorId"] == executor.id
    assert executor.name in created["message"]

    other_org = make_org(server.url, system_admin)
    foreign = FakeExecutor(server.url, other_org.executor_key())
    foreign.sync()
    member = org.add_member("MEMBER")
    before = org_state(org, server.database_url)
    cases: list[tuple[Client, str, str, str, str | None]] = [
        (org.owner, "PERSONAL", executor.id, "invalid_input", "executorId"),
        (org.owner, "EXECUTOR", str(foreign.id), "not_found", "executorId"),
        (org.owner, "EXECUTOR", str(uuid.uuid4()), "not_found", "executorId"),
        (member, "EXECUTOR", executor.id, "forbidden", None),
    ]
    for client, kind, executor_id, code, field in cases:
        err = gql_error(client, CREATE_KEY_FOR, {"n": unique("k"), "k": kind, "e": executor_id})
        assert (err.code, err.extensions.get("field")) == (code, field), (kind, executor_id)
    assert org_state(org, server.database_url) == before


def test_the_executor_protocol_stays_closed_to_an_unbound_key(
    org: Org, server: ServerProcess
) -> None:
    _, secret = new_key(org.owner, "never-synced")
    fresh = FakeExecutor(server.url, secret)
    node = str(uuid.uuid4())
    assert refused(lambda: fresh.poll({}, wait=0)).code == "invalid_action"
    assert refused(lambda: fresh.confirm_teardown(node)).code == "invalid_action"
    event = RuntimeEvent(type="executor.disk.low", level=EventLevel.WARN, message="x")
    assert refused(lambda: fresh.report(event)).code == "invalid_action"
