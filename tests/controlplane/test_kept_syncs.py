"""A heartbeat that repeats, byte for byte, a steady one is answered from what the server kept
of it (services/executors.py `kept_sync`), with no read. Each test here lets a look be kept
(one written sync, then repeats), changes something that decides the answer, and sends the same
bytes again: the answer must be the one the database gives now. The changes are those that no
spec wake-up carried before looks were kept: a teardown, another instance's takeover, and the
offline sweep of an executor with no nodes. tests/controlplane/test_executor_calls.py shows the
repeats are answered from the look; tests/controlplane/test_replicas.py, a change made through
another process."""

import uuid

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import all_events, deploy, executor_view, wait_until
from tests.support.fleet import FakeExecutor, Org
from tests.support.server import ServerProcess

DELETE = "mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }"


def _observation(revision: int = 1) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision,
        processes=[ObservedProcess(role="node", status=ProcessStatus.RUNNING, height=9)],
    )


def _repeat(agent: FakeExecutor, observations: dict[str, ObservedNodeState], times: int) -> None:
    """Steady syncs: the first is read, the rest are answered from what it kept."""
    for _ in range(times):
        assert agent.sync(observations)["rejected"] == []


def test_a_node_torn_down_is_refused_in_the_next_repeat(org: Org, server: ServerProcess) -> None:
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    nid = deploy(org.owner, agent, "kept-teardown")["id"]
    observations = {nid: _observation()}
    agent.sync(observations)  # written
    _repeat(agent, observations, 3)
    org.owner(DELETE, {"id": nid})
    # Still the executor's while it is being deleted: the same heartbeat stands.
    _repeat(agent, observations, 3)
    assert agent.confirm_teardown(nid)
    refused = agent.sync(observations)["rejected"]
    assert [(r["nodeId"], r["reason"]) for r in refused] == [(nid, "not a node of this executor")]


def test_an_instance_taken_over_is_refused_in_its_next_repeat(
    org: Org, server: ServerProcess
) -> None:
    key = org.executor_key()
    first = FakeExecutor(server.url, key, instance_id=uuid.uuid4())
    first.sync()
    _repeat(first, {}, 3)
    assert first.instance_id is not None
    successor = FakeExecutor(
        server.url,
        key,
        name=first.name,
        instance_id=uuid.uuid4(),
        previous_instance_ids=[first.instance_id],
    )
    successor.sync()
    with pytest.raises(ControlPlaneError) as refused:
        first.sync()
    assert refused.value.code == "executor_instance_conflict"
    _repeat(successor, {}, 2)


def test_an_executor_with_no_nodes_marked_offline_reconnects_with_its_next_repeat(
    org: Org, server: ServerProcess
) -> None:
    agent = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    agent.sync()
    assert agent.id is not None
    _repeat(agent, {}, 3)
    # Silent past the heartbeat timeout: the sweep marks it offline (it has no node to notify).
    wait_until(
        lambda: all_events(org.owner, type="executor.disconnected"),
        timeout=server.heartbeat_timeout * 5 + 10,
        interval=0.2,
        what="the executor marked offline",
    )
    assert executor_view(org.owner, agent.id)["status"] == "OFFLINE"
    # The same bytes as before it went silent: a reconnect, recorded by the sync itself.
    _repeat(agent, {}, 1)
    assert [e["type"] for e in all_events(org.owner, type="executor.reconnected")] == [
        "executor.reconnected"
    ]
    assert executor_view(org.owner, agent.id)["status"] == "ONLINE"
