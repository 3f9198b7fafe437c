"""Everything the control plane knows survives a restart on the same database (both backends)."""

from collections.abc import Iterator
from pathlib import Path
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
from tests.conftest import BACKENDS, new_database_url
from tests.support.calls import act, all_events, deploy, revisions
from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client, GraphQLError
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    drop_pg_database,
)

# Control-plane processes and PostgreSQL, started here rather than through fixtures.
pytestmark = pytest.mark.server

S = ProcessStatus
LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"
NODES = """
{ nodes(first: 200) { items { id name revision observedRevision phase desiredState pendingChange
    spec observed observedAt deletedAt retainData executorId createdAt updatedAt } } }"""
KEYS = "{ apiKeys { id name kind prefix enabled executorId expiresAt createdAt revokedAt } }"
EXECUTORS = "{ executors { id name kind version lastSyncAt capabilities nodeCount } }"
ME = "{ me { email role kind organization { id name } } }"


def _obs(revision: int, status: ProcessStatus) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status)]
    )


@pytest.fixture(params=BACKENDS)
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A dedicated server that the test may stop and start again on the same database."""
    backend: str = request.param
    url = new_database_url(backend, tmp_path)
    # A long heartbeat timeout: the restart itself must not add disconnect events to compare.
    proc = ServerProcess(database_url=url, workdir=tmp_path / "server", heartbeat_timeout=600)
    proc.start()
    yield proc
    proc.stop()
    if backend == "postgresql":
        drop_pg_database(url)


def snapshot(org: Org, executor_key: str, node_ids: list[str]) -> dict[str, Any]:
    """Everything the API shows about the organization, in a comparable form."""
    owner = org.owner
    return {
        "me": owner(ME)["me"],
        "nodes": sorted(owner(NODES)["nodes"]["items"], key=lambda n: n["id"]),
        "revisions": {nid: revisions(owner, nid) for nid in node_ids},
        "keys": sorted(owner(KEYS)["apiKeys"], key=lambda k: k["id"]),
        "executors": owner(EXECUTORS)["executors"],
        "events": all_events(owner, page_size=50),
        "executor_me": Client(org.base_url, executor_key)(ME)["me"],
    }


def test_state_survives_a_restart(restartable: ServerProcess) -> None:
    server = restartable
    admin_token = Client(server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]
    org = make_org(server.url, Client(server.url, admin_token["token"]))
    admin = org.add_member("ADMIN")

    executor_key = org.executor_key("host-key")
    ex = FakeExecutor(server.url, executor_key)
    ex.sync()
    personal = org.owner(
        'mutation { createApiKey(name: "ci", kind: PERSONAL) { apiKey { id } secret } }'
    )["createApiKey"]
    revoked = org.owner(
        'mutation { createApiKey(name: "old", kind: EXECUTOR) { apiKey { id } secret } }'
    )["createApiKey"]
    org.owner(
        "mutation($id: UUID!) { revokeApiKey(id: $id) { id } }", {"id": revoked["apiKey"]["id"]}
    )

    running = deploy(org.owner, ex, "ltc-running")["id"]
    stopped = deploy(org.owner, ex, "ltc-stopped")["id"]
    fresh = deploy(admin, ex, "ltc-fresh")["id"]  # never observed: provisioning
    gone = deploy(org.owner, ex, "ltc-gone")["id"]
    act(org.owner, running, "RESTART")
    act(admin, running, "RESTART")
    act(org.owner, stopped, "STOP")
    org.owner(
        """mutation($input: UpdateNodeInput!) { updateNode(input: $input) { revision } }""",
        {"input": {"nodeId": running, "overrides": {"args": {"node": ["-txindex=1"]}}}},
    )
    org.owner(
        "mutation($id: UUID!) { deleteNode(nodeId: $id, retainData: true) { id } }", {"id": gone}
    )
    ex.sync(
        {
            running: _obs(4, S.RUNNING),
            stopped: _obs(2, S.STOPPED),
            gone: _obs(1, S.STOPPING),
        }
    )
    ex.report(
        RuntimeEvent(type="node.process.crashed", level=EventLevel.ERROR, message="segfault"),
        RuntimeEvent(type="node.sync.stalled", level=EventLevel.WARN, message="no peers"),
    )
    node_ids = [running, stopped, fresh, gone]
    before = snapshot(org, executor_key, node_ids)
    phases = {n["name"]: (n["revision"], n["phase"]) for n in before["nodes"]}
    assert phases == {
        "ltc-running": (4, "RUNNING"),
        "ltc-stopped": (2, "STOPPED"),
        "ltc-fresh": (1, "PROVISIONING"),
        "ltc-gone": (1, "DELETING"),
    }
    assert len(before["events"]) > 10

    server.stop()
    server.start()

    after = snapshot(org, executor_key, node_ids)
    for part in before:
        assert after[part] == before[part], f"{part} changed across the restart"

    # Every credential behaves as before: sessions, the personal key, the executor key.
    assert admin(ME)["me"]["role"] == "ADMIN"
    assert Client(server.url, personal["secret"])(ME)["me"]["email"] == before["me"]["email"]
    with pytest.raises(GraphQLError) as err:
        Client(server.url, revoked["secret"])(EXECUTORS)  # a revoked key is nobody
    assert err.value.code == "unauthenticated"
    with pytest.raises(ControlPlaneError) as cp_err:
        FakeExecutor(server.url, revoked["secret"]).sync()
    assert cp_err.value.code == "unauthenticated"

    # The executor picks up where it was: nothing newer, and the tombstone still pending.
    held = {running: 4, stopped: 2, fresh: 1, gone: 1}
    assert ex.poll(held, wait=0, deleted={gone}) == []
    assert [(str(s.node_id), s.deleted) for s in ex.poll(held, wait=0)] == [(gone, True)]
    assert ex.confirm_teardown(gone) is True

    # Revisions continue from where they were; the restart added no events of its own.
    assert act(org.owner, running, "STOP")["revision"] == 5
    new = all_events(org.owner)
    assert new[len(new) - len(before["events"]) :] == before["events"]
    assert [e["type"] for e in new[: len(new) - len(before["events"])]] == [
        "node.lifecycle.requested",
        "node.lifecycle.transition",
        "node.removed",
    ]

    # The first admin still signs in with the password it was created with.
    assert Client(server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]["token"]
