"""Who may read and change what (DESIGN §7), over HTTP against a real server, on SQLite and
PostgreSQL: roles, organization scoping, executor keys, revoked and expired keys and how secrets
are stored (sign-in throttling: test_sign_in_throttle.py)."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import (
    EventLevel,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
)
from tests.support.calls import wait_until
from tests.support.db import api_key_cells, cells_containing
from tests.support.fleet import (
    CREATE_NODE,
    LITECOIN_SPEC,
    FakeExecutor,
    Org,
    make_org,
    unique,
)
from tests.support.gql import Client, GraphQLError
from tests.support.server import ServerProcess
from tests.support.state import org_state

NODE = "query($id: UUID!) { node(id: $id) { id name phase revision deletedAt observed executor { id } } }"
UPDATE_NODE = "mutation($input: UpdateNodeInput!) { updateNode(input: $input) { id revision } }"
LIFECYCLE = "mutation($id: UUID!, $a: LifecycleAction!) { requestNodeLifecycleAction(nodeId: $id, action: $a) { id revision desiredState } }"
DELETE_NODE = "mutation($id: UUID!) { deleteNode(nodeId: $id) { id deletedAt } }"
CREATE_KEY = "mutation($n: String!, $k: ApiKeyKind!, $x: DateTime) { createApiKey(name: $n, kind: $k, expiresAt: $x) { apiKey { id name kind prefix enabled lastUsedAt createdAt } secret } }"
REVOKE_KEY = "mutation($id: UUID!) { revokeApiKey(id: $id) { id enabled revokedAt } }"
API_KEYS = "{ apiKeys { id name kind prefix enabled executorId expiresAt lastUsedAt createdAt revokedAt } }"
INVITE = (
    "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) { token email role } }"
)
CREATE_ORG = "mutation($n: String!, $e: String!) { createOrganization(name: $n, ownerEmail: $e) { organization { id name } inviteToken } }"
NODES = "query($f: NodeFilter) { nodes(filter: $f, first: 200) { items { id name } } }"
EXECUTORS = "{ executors { id name } }"
EXECUTOR = "query($id: UUID!) { executor(id: $id) { id name } }"
REVISIONS = "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision } }"
REVISION_DIFF = (
    "query($id: UUID!) { nodeRevisionDiff(nodeId: $id, fromRevision: 1, toRevision: 1) { path } }"
)
EVENTS = "query($f: EventFilter) { events(filter: $f, first: 200) { items { id type nodeId executorId } } }"
EVENTS_WITH_ACTOR = (
    "query($id: UUID!) { events(filter: {nodeId: $id}, first: 200) { items { type actor } } }"
)
MEMBERS = "{ members { email role } }"
ME = "{ me { email role kind executorId organization { id } } }"


# ---- helpers -------------------------------------------------------------------------------


def error_of(client: Client, query: str, variables: dict[str, Any] | None = None) -> GraphQLError:
    """The typed error `client` gets for `query`; fails the test if the call succeeds."""
    with pytest.raises(GraphQLError) as err:
        client(query, variables)
    return err.value


def protocol_error_of(call: Any) -> ControlPlaneError:
    """The typed error an executor protocol call gets; fails the test if it succeeds."""
    with pytest.raises(ControlPlaneError) as err:
        call()
    return err.value


def deploy(client: Client, executor: FakeExecutor, name: str = "ltc-1") -> str:
    node_id: str = client(
        CREATE_NODE, {"input": {"executorId": executor.id, "name": name, "spec": LITECOIN_SPEC}}
    )["createNode"]["id"]
    return node_id


def get_node(client: Client, node_id: str) -> dict[str, Any]:
    node: dict[str, Any] | None = client(NODE, {"id": node_id})["node"]
    assert node is not None
    return node


def node_ids(client: Client, flt: dict[str, Any] | None = None) -> list[str]:
    return [n["id"] for n in client(NODES, {"f": flt})["nodes"]["items"]]


def event_items(client: Client, **flt: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client(EVENTS, {"f": flt or None})["events"]["items"]
    return items


def email_of(client: Client) -> str:
    email: str = client(ME)["me"]["email"]
    return email


def observed(revision: int, status: ProcessStatus) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status)]
    )


def runtime_event(node_id: str) -> RuntimeEvent:
    return RuntimeEvent(
        type="node.process.crashed",
        level=EventLevel.ERROR,
        message="crashed",
        node_id=uuid.UUID(node_id),
    )


def user_mutations(node_id: str, executor_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every mutation that changes the fleet or the organization, aimed at real objects."""
    return {
        "createNode": (
            CREATE_NODE,
            {"input": {"executorId": executor_id, "name": unique("n"), "spec": LITECOIN_SPEC}},
        ),
        "updateNode": (
            UPDATE_NODE,
            {"input": {"nodeId": node_id, "overrides": {"args": {"node": ["-txindex=1"]}}}},
        ),
        "requestNodeLifecycleAction": (LIFECYCLE, {"id": node_id, "a": "STOP"}),
        "deleteNode": (DELETE_NODE, {"id": node_id}),
        "createApiKey": (CREATE_KEY, {"n": "k", "k": "EXECUTOR"}),
        "inviteMember": (INVITE, {"e": f"{unique('x')}@example.test", "r": "MEMBER"}),
    }


# ---- roles ---------------------------------------------------------------------------------


def test_member_reads_everything_but_cannot_mutate(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    nid = deploy(org.owner, executor)
    member = org.add_member("MEMBER")
    # A personal key acts as its member, with the member's rights.
    personal = member(CREATE_KEY, {"n": "mine", "k": "PERSONAL"})["createApiKey"]["secret"]
    before = org_state(org, server.database_url)

    for who in (member, member.as_(personal)):
        for name, (query, variables) in user_mutations(nid, str(executor.id)).items():
            err = error_of(who, query, variables)
            assert err.code == "forbidden", name
        assert error_of(who, INVITE, {"e": "x@example.test", "r": "OWNER"}).code == "forbidden"

        # ...but reads the organization's fleet like anyone in it.
        assert node_ids(who) == [nid]
        got = who(NODE, {"id": nid})["node"]
        assert got["id"] == nid and got["executor"]["id"] == executor.id
        assert [r["revision"] for r in who(REVISIONS, {"id": nid})["nodeRevisions"]] == [1]
        assert who(EXECUTORS)["executors"] == [{"id": executor.id, "name": executor.name}]
        assert who(EXECUTOR, {"id": executor.id})["executor"]["id"] == executor.id
        assert nid in {e["nodeId"] for e in event_items(who)}
        assert len(who(MEMBERS)["members"]) == 2
        assert who(ME)["me"]["role"] == "MEMBER"

    after = org_state(org, server.database_url)
    assert after == before
    assert get_node(org.owner, nid)["revision"] == 1


def test_admin_can_mutate(org: Org, executor: FakeExecutor) -> None:
    admin = org.add_member("ADMIN")
    nid = deploy(admin, executor, "by-admin")
    updated = admin(
        UPDATE_NODE, {"input": {"nodeId": nid, "overrides": {"args": {"node": ["-txindex=1"]}}}}
    )["updateNode"]
    assert updated["revision"] == 2
    stopped = admin(LIFECYCLE, {"id": nid, "a": "STOP"})["requestNodeLifecycleAction"]
    assert stopped["revision"] == 3 and stopped["desiredState"] == "STOPPED"
    assert admin(DELETE_NODE, {"id": nid})["deleteNode"]["deletedAt"]
    key = admin(CREATE_KEY, {"n": "exec", "k": "EXECUTOR"})["createApiKey"]
    assert key["secret"].startswith("npx_") and key["apiKey"]["kind"] == "EXECUTOR"
    invited = admin(INVITE, {"e": f"{unique('m')}@example.test", "r": "MEMBER"})["inviteMember"]
    assert invited["role"] == "MEMBER" and invited["token"]
    # Only owners make owners.
    assert error_of(admin, INVITE, {"e": "o@example.test", "r": "OWNER"}).code == "forbidden"
    assert org.owner(INVITE, {"e": f"{unique('o')}@example.test", "r": "OWNER"})["inviteMember"]

    admin_email = email_of(admin)
    mine = {
        e["type"]: e["actor"] for e in org.owner(EVENTS_WITH_ACTOR, {"id": nid})["events"]["items"]
    }
    for kind in ("node.created", "node.updated", "node.lifecycle.requested", "node.deleted"):
        assert mine[kind] == admin_email, kind


def test_only_a_system_admin_creates_organizations(
    org: Org, executor: FakeExecutor, system_admin: Client, server: ServerProcess
) -> None:
    name = unique("org")
    args = {"n": name, "e": f"{unique('boss')}@example.test"}
    executor_key = Client(server.url, executor.api_key)
    for who in (org.owner, org.add_member("ADMIN"), org.add_member("MEMBER"), executor_key):
        assert error_of(who, CREATE_ORG, args).code == "forbidden"
    assert error_of(Client(server.url), CREATE_ORG, args).code == "unauthenticated"
    assert cells_containing(server.database_url, name) == []

    created = system_admin(CREATE_ORG, args)["createOrganization"]
    assert created["organization"]["name"] == name and created["inviteToken"]


# ---- organization scoping ------------------------------------------------------------------


def test_another_organization_sees_nothing_and_changes_nothing(
    org: Org, executor: FakeExecutor, server: ServerProcess, system_admin: Client
) -> None:
    nid = deploy(org.owner, executor)
    executor.observe(nid, 1, ProcessStatus.RUNNING)
    key_id = org.owner(API_KEYS)["apiKeys"][0]["id"]
    other = make_org(server.url, system_admin)
    other_executor = FakeExecutor(server.url, other.executor_key(), name=executor.name)
    other_executor.sync()
    # Same executor name, other organization: a different executor.
    assert other_executor.id != executor.id
    before = org_state(org, server.database_url)
    our_events = {e["id"] for e in before["events"]}

    # The system admin belongs to its own organization and is an outsider here too.
    other_key = Client(server.url, other_executor.api_key)
    for outsider in (other.owner, other.add_member("MEMBER"), system_admin, other_key):
        assert outsider(NODE, {"id": nid})["node"] is None
        assert nid not in node_ids(outsider)
        assert executor.id not in {e["id"] for e in outsider(EXECUTORS)["executors"]}
        assert outsider(EXECUTOR, {"id": executor.id})["executor"] is None
        assert outsider(REVISIONS, {"id": nid})["nodeRevisions"] == []
        assert outsider(REVISION_DIFF, {"id": nid})["nodeRevisionDiff"] is None
        assert not our_events & {e["id"] for e in event_items(outsider)}
        assert event_items(outsider, nodeId=nid) == []
        assert event_items(outsider, executorId=executor.id) == []
    assert node_ids(other.owner) == []
    assert other.owner(EXECUTORS)["executors"] == [{"id": other_executor.id, "name": executor.name}]

    # Changes to our objects fail exactly as for ids that exist nowhere.
    for outsider in (other.owner, other.add_member("ADMIN")):
        for name, (query, variables) in user_mutations(nid, str(executor.id)).items():
            if name in ("createApiKey", "inviteMember"):
                continue  # these act on the caller's own organization
            err = error_of(outsider, query, variables)
            assert err.code == "not_found", name
            ghost = user_mutations(str(uuid.uuid4()), str(uuid.uuid4()))[name]
            assert error_of(outsider, *ghost).errors[0]["message"] == err.errors[0]["message"]
        assert error_of(outsider, REVOKE_KEY, {"id": key_id}).code == "not_found"

    # The other organization's executor cannot touch our node either.
    result = other_executor.sync({nid: observed(1, ProcessStatus.STOPPED)})
    assert [r["nodeId"] for r in result["rejected"]] == [nid]
    assert other_executor.poll({}, wait=0) == []
    assert other_executor.report(runtime_event(nid)) == 0
    org.owner(DELETE_NODE, {"id": nid})
    assert other_executor.confirm_teardown(nid) is False
    assert get_node(org.owner, nid)["deletedAt"] is not None  # still there, awaiting our executor

    after = org_state(org, server.database_url)
    deleted = [e for e in after["events"] if e["id"] not in our_events]
    assert {e["type"] for e in deleted} == {"node.deleted", "node.lifecycle.transition"}
    assert after["revisions"] == before["revisions"]
    assert {k: v for k, v in after["rows"].items() if k != "events"} == {
        k: v for k, v in before["rows"].items() if k != "events"
    }
    assert get_node(org.owner, nid)["observed"]["processes"][0]["status"] == "running"
    assert org.owner(API_KEYS)["apiKeys"][0]["enabled"] is True


# ---- executor keys -------------------------------------------------------------------------


def test_executor_key_sees_only_its_own_executors_nodes(org: Org, server: ServerProcess) -> None:
    a = FakeExecutor(server.url, org.executor_key("a"))
    b = FakeExecutor(server.url, org.executor_key("b"))
    a.sync()
    b.sync()
    na = deploy(org.owner, a, "on-a")
    nb = deploy(org.owner, b, "on-b")
    assert sorted(node_ids(org.owner)) == sorted([na, nb])

    for me, mine, theirs, other in ((a, na, nb, b), (b, nb, na, a)):
        as_key = Client(server.url, me.api_key)
        assert as_key(ME)["me"]["kind"] == "executor"
        assert as_key(ME)["me"]["executorId"] == me.id
        assert node_ids(as_key) == [mine]
        assert node_ids(as_key, {"executorId": other.id}) == []
        assert get_node(as_key, mine)["id"] == mine
        assert as_key(NODE, {"id": theirs})["node"] is None
        assert [str(s.node_id) for s in me.poll({}, wait=0)] == [mine]
        assert as_key(EXECUTORS)["executors"] == [{"id": me.id, "name": me.name}]
        assert as_key(EXECUTOR, {"id": other.id})["executor"] is None
        assert as_key(REVISIONS, {"id": theirs})["nodeRevisions"] == []
        assert [r["revision"] for r in as_key(REVISIONS, {"id": mine})["nodeRevisions"]] == [1]
        seen = event_items(as_key)
        assert seen and all(e["executorId"] == me.id for e in seen)
        assert theirs not in {e["nodeId"] for e in seen}
        assert event_items(as_key, nodeId=theirs) == []

    # A cannot observe, report about or tear down B's node.
    b.observe(nb, 1, ProcessStatus.RUNNING)
    result = a.sync({nb: observed(1, ProcessStatus.ERROR)})
    assert [r["nodeId"] for r in result["rejected"]] == [nb]
    assert get_node(org.owner, nb)["phase"] == "RUNNING"
    assert a.report(runtime_event(nb)) == 0
    assert event_items(org.owner, nodeId=nb, type="node.process.crashed") == []
    org.owner(DELETE_NODE, {"id": nb})
    assert a.confirm_teardown(nb) is False
    assert get_node(org.owner, nb)["deletedAt"] is not None
    assert [(str(s.node_id), s.deleted) for s in b.poll({nb: 1}, wait=0)] == [(nb, True)]
    assert a.poll({na: 1}, wait=0) == []


def test_executor_key_cannot_call_user_mutations(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    nid = deploy(org.owner, executor)
    key_id = org.owner(API_KEYS)["apiKeys"][0]["id"]
    as_key = Client(server.url, executor.api_key)
    before = org_state(org, server.database_url)
    calls = {
        **user_mutations(nid, str(executor.id)),
        "createApiKey PERSONAL": (CREATE_KEY, {"n": "p", "k": "PERSONAL"}),
        "revokeApiKey": (REVOKE_KEY, {"id": key_id}),
        "createOrganization": (CREATE_ORG, {"n": unique("org"), "e": "e@example.test"}),
    }
    for name, (query, variables) in calls.items():
        assert error_of(as_key, query, variables).code == "forbidden", name
    # Member-only reads are refused too rather than answered with another principal's view.
    assert error_of(as_key, API_KEYS).code == "forbidden"
    assert error_of(as_key, MEMBERS).code == "forbidden"
    assert org_state(org, server.database_url) == before
    executor.sync()  # the key still works for what it is for


def test_a_user_cannot_speak_the_executor_protocol(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    nid = deploy(org.owner, executor)
    org.owner(DELETE_NODE, {"id": nid})
    personal = org.owner(CREATE_KEY, {"n": "p", "k": "PERSONAL"})["createApiKey"]["secret"]
    member = org.add_member("MEMBER")
    before = org_state(org, server.database_url)
    for token in (org.owner.token, personal, member.token):
        assert token is not None
        as_user = FakeExecutor(server.url, token, name=executor.name)
        assert protocol_error_of(as_user.sync).code == "forbidden"
        assert protocol_error_of(lambda u=as_user: u.poll({}, wait=0)).code == "forbidden"
        assert protocol_error_of(lambda u=as_user: u.confirm_teardown(nid)).code == "forbidden"
        assert protocol_error_of(lambda u=as_user: u.report(runtime_event(nid))).code == (
            "forbidden"
        )
    assert org_state(org, server.database_url) == before
    assert get_node(org.owner, nid)["deletedAt"] is not None


def test_executor_key_is_bound_to_its_first_executor_name(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    impostor = FakeExecutor(server.url, executor.api_key, name=unique("other"))
    assert protocol_error_of(impostor.sync).code == "forbidden"
    assert org.owner(EXECUTORS)["executors"] == [{"id": executor.id, "name": executor.name}]
    assert executor.sync()["executor"]["id"] == executor.id


# ---- authentication ------------------------------------------------------------------------


def test_unauthenticated_calls_are_refused(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    nid = deploy(org.owner, executor)
    before = org_state(org, server.database_url)
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        "nodes": (NODES, {}),
        "node": (NODE, {"id": nid}),
        "nodeRevisions": (REVISIONS, {"id": nid}),
        "executors": (EXECUTORS, {}),
        "executor": (EXECUTOR, {"id": executor.id}),
        "events": (EVENTS, {}),
        "apiKeys": (API_KEYS, {}),
        "members": (MEMBERS, {}),
        "executorSpecs": ("{ executorSpecs { nodeId } }", {}),
        "executorLogSessions": ("{ executorLogSessions { sessionId } }", {}),
        "postLogChunk": (
            "mutation($c: JSON!) { postLogChunk(chunk: $c) }",
            {"c": {"sessionId": str(uuid.uuid4()), "lines": []}},
        ),
        "syncExecutor": (
            "mutation($i: JSON!) { syncExecutor(input: $i) { executor { id } } }",
            {"i": {"name": unique("host"), "kind": "agent", "version": "1"}},
        ),
        **user_mutations(nid, str(executor.id)),
        "createOrganization": (CREATE_ORG, {"n": unique("org"), "e": "e@example.test"}),
    }
    garbage = [
        None,
        "nonsense",
        "nps_" + uuid.uuid4().hex,
        "npx_" + uuid.uuid4().hex,
        "npk_" + uuid.uuid4().hex,
        "x" * 500,
    ]
    for token in garbage:
        anon = Client(server.url, token)
        for name, (query, variables) in calls.items():
            assert error_of(anon, query, variables).code == "unauthenticated", (token, name)
        if token is not None:
            anon_executor = FakeExecutor(server.url, token)
            assert protocol_error_of(anon_executor.sync).code == "unauthenticated"
    assert org_state(org, server.database_url) == before


def test_revoked_keys_are_unauthenticated_at_once(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    keys = {k["name"]: k for k in org.owner(API_KEYS)["apiKeys"]}
    personal = org.owner(CREATE_KEY, {"n": "personal", "k": "PERSONAL"})["createApiKey"]
    as_personal = Client(server.url, personal["secret"])
    assert node_ids(as_personal) == []

    revoked = org.owner(REVOKE_KEY, {"id": keys["executor"]["id"]})["revokeApiKey"]
    assert revoked["enabled"] is False and revoked["revokedAt"]
    assert protocol_error_of(executor.sync).code == "unauthenticated"
    assert protocol_error_of(lambda: executor.poll({}, wait=0)).code == "unauthenticated"
    assert error_of(Client(server.url, executor.api_key), NODES).code == "unauthenticated"

    org.owner(REVOKE_KEY, {"id": personal["apiKey"]["id"]})
    assert error_of(as_personal, NODES).code == "unauthenticated"
    listed = {k["id"]: k for k in org.owner(API_KEYS)["apiKeys"]}
    assert listed[personal["apiKey"]["id"]]["enabled"] is False
    assert listed[keys["executor"]["id"]]["revokedAt"] is not None


def test_expired_key_is_unauthenticated_and_expiry_must_be_in_the_future(
    org: Org, server: ServerProcess
) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=3)
    created = org.owner(CREATE_KEY, {"n": "short", "k": "EXECUTOR", "x": expires.isoformat()})
    ex = FakeExecutor(server.url, created["createApiKey"]["secret"])
    ex.sync()
    assert node_ids(Client(server.url, ex.api_key)) == []
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.5)
    assert protocol_error_of(ex.sync).code == "unauthenticated"
    assert error_of(Client(server.url, ex.api_key), NODES).code == "unauthenticated"

    before = org_state(org, server.database_url)
    for bad in (
        datetime.now(UTC) - timedelta(seconds=5),
        datetime.now(UTC) - timedelta(days=400),
    ):
        err = error_of(org.owner, CREATE_KEY, {"n": "past", "k": "EXECUTOR", "x": bad.isoformat()})
        assert err.code == "invalid_input" and err.extensions["field"] == "expiresAt"
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    err = error_of(org.owner, CREATE_KEY, {"n": "naive", "k": "EXECUTOR", "x": naive})
    assert err.code == "invalid_input"
    assert org_state(org, server.database_url) == before


# ---- API key secrets -----------------------------------------------------------------------


def test_key_last_used_at_is_set_on_use(org: Org, server: ServerProcess) -> None:
    created = {
        kind: org.owner(CREATE_KEY, {"n": kind.lower(), "k": kind})["createApiKey"]
        for kind in ("EXECUTOR", "PERSONAL")
    }
    for c in created.values():
        assert c["apiKey"]["lastUsedAt"] is None
    listed = {k["id"]: k for k in org.owner(API_KEYS)["apiKeys"]}
    assert all(listed[c["apiKey"]["id"]]["lastUsedAt"] is None for c in created.values())

    FakeExecutor(server.url, created["EXECUTOR"]["secret"]).sync()
    Client(server.url, created["PERSONAL"]["secret"])(NODES)

    # Written behind the request, within the server's flush interval (store/seen_times.py).
    def all_used() -> dict[str, dict[str, Any]] | None:
        keys = {k["id"]: k for k in org.owner(API_KEYS)["apiKeys"]}
        return (
            keys if all(keys[c["apiKey"]["id"]]["lastUsedAt"] for c in created.values()) else None
        )

    listed = wait_until(all_used, timeout=5, what="lastUsedAt written")
    for c in created.values():
        used = listed[c["apiKey"]["id"]]["lastUsedAt"]
        assert used is not None
        assert datetime.fromisoformat(used) >= datetime.fromisoformat(c["apiKey"]["createdAt"])
        assert datetime.fromisoformat(used) <= datetime.now(UTC) + timedelta(seconds=5)


def test_api_key_secret_is_shown_once_and_stored_hashed(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    created = org.owner(CREATE_KEY, {"n": "shown-once", "k": "EXECUTOR"})["createApiKey"]
    secret = created["secret"]
    assert secret.startswith("npx_") and len(secret) >= 40
    assert secret.startswith(created["apiKey"]["prefix"]) and len(created["apiKey"]["prefix"]) < 16
    FakeExecutor(server.url, secret).sync()  # a real, working key

    # No read returns it again: the type has no such field at all.
    assert error_of(org.owner, "{ apiKeys { id secret } }").code == "bad_request"
    fields = org.owner('{ __type(name: "ApiKey") { fields { name } } }')["__type"]["fields"]
    names = {f["name"].lower() for f in fields}
    assert not {n for n in names if "secret" in n or "hash" in n or "token" in n}
    listed = org.owner(API_KEYS)["apiKeys"]
    assert secret not in str(listed)

    # The database keeps only a digest: the secret is in no cell of any table.
    assert cells_containing(server.database_url, secret) == []
    stored = api_key_cells(server.database_url, created["apiKey"]["id"])
    assert stored["token_hash"] and stored["token_hash"] != secret
    assert secret[len(created["apiKey"]["prefix"]) :] not in str(stored)
    # Session tokens are kept the same way.
    assert org.owner.token is not None
    assert cells_containing(server.database_url, org.owner.token) == []
