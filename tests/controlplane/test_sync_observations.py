"""How a heartbeat's observations are stored: a repeated one only moves the report time, a changed
one records its phase change, and every check still applies (services/executors.py)."""

import asyncio
import dataclasses
import time
import uuid
from typing import Any

from sqlalchemy import select

from nodeplane.controlplane.services.node_facts import NODE_FACTS_COLUMNS, NodeFacts, node_facts
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.models import Node
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.support.calls import act, all_events, deploy
from tests.support.fleet import FakeExecutor, Org
from tests.support.gql import Client
from tests.support.server import ServerProcess

OBSERVED_AT = "query($id: UUID!) { node(id: $id) { phase observedRevision observedAt observed } }"


def _node(client: Client, node_id: str) -> dict[str, Any]:
    node: dict[str, Any] = client(OBSERVED_AT, {"id": node_id})["node"]
    return node


def _state(revision: int, status: ProcessStatus, height: int | None = None) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status, height=height)]
    )


def _transitions(org: Org, node_id: str) -> list[dict[str, Any]]:
    return all_events(org.owner, nodeId=node_id, type="node.lifecycle.transition")


def test_a_repeated_observation_moves_only_the_report_time(
    org: Org, executor: FakeExecutor
) -> None:
    node_id = deploy(org.owner, executor, "steady")["id"]
    executor.sync({node_id: _state(1, ProcessStatus.RUNNING, height=5)})
    first = _node(org.owner, node_id)
    assert first["phase"] == "RUNNING"
    events = _transitions(org, node_id)
    time.sleep(0.05)
    executor.sync({node_id: _state(1, ProcessStatus.RUNNING, height=5)})
    again = _node(org.owner, node_id)
    assert again["observedAt"] > first["observedAt"]
    assert again["observed"] == first["observed"] and again["phase"] == "RUNNING"
    assert _transitions(org, node_id) == events

    # A new height is a change: stored, though the phase stays.
    executor.sync({node_id: _state(1, ProcessStatus.RUNNING, height=6)})
    assert _node(org.owner, node_id)["observed"]["processes"][0]["height"] == 6
    # A stopped process is a change of phase: recorded.
    executor.sync({node_id: _state(1, ProcessStatus.STOPPED, height=6)})
    assert _node(org.owner, node_id)["phase"] != "RUNNING"
    latest = _transitions(org, node_id)
    assert len(latest) == len(events) + 1
    assert latest[0]["payload"]["from"] == "running"


def test_the_same_node_twice_in_one_heartbeat_ends_at_the_last(
    org: Org, executor: FakeExecutor
) -> None:
    node_id = deploy(org.owner, executor, "twice")["id"]
    executor.sync({node_id: _state(1, ProcessStatus.RUNNING)})
    before = _transitions(org, node_id)
    request_nodes = [
        (node_id, _state(1, ProcessStatus.RUNNING)),  # repeats what is stored...
        (node_id, _state(1, ProcessStatus.STOPPED)),  # ...then changes it
    ]
    executor.sync_pairs(request_nodes)
    node = _node(org.owner, node_id)
    assert node["observed"]["processes"][0]["status"] == "stopped"
    assert len(_transitions(org, node_id)) == len(before) + 1


def test_rejected_observations_leave_the_node_as_it_was(org: Org, executor: FakeExecutor) -> None:
    node_id = deploy(org.owner, executor, "ahead")["id"]
    executor.sync({node_id: _state(1, ProcessStatus.RUNNING)})
    stored = _node(org.owner, node_id)
    stranger = str(uuid.uuid4())
    result = executor.sync(
        {node_id: _state(2, ProcessStatus.RUNNING), stranger: _state(1, ProcessStatus.RUNNING)}
    )
    reasons = {r["nodeId"]: r["reason"] for r in result["rejected"]}
    assert "newer than the spec's 1" in reasons[node_id]
    assert reasons[stranger] == "not a node of this executor"
    assert _node(org.owner, node_id) == stored


def test_metric_values_status_changes_and_repeats_in_one_heartbeat(
    org: Org, executor: FakeExecutor
) -> None:
    """An executor's heartbeat after its metrics interval carries new metric values for every
    node (stored in one statement, services/executors.py `_store_metric_values`), beside nodes
    whose status changed (stored whole, their phase change recorded) and nodes it repeats."""
    climbing, stopping, repeated = (deploy(org.owner, executor, n)["id"] for n in "abc")
    first = {
        climbing: _state(1, ProcessStatus.RUNNING, height=5),
        stopping: _state(1, ProcessStatus.RUNNING, height=7),
        repeated: _state(1, ProcessStatus.RUNNING, height=9),
    }
    executor.sync(first)
    before = {nid: _node(org.owner, nid) for nid in first}
    events = {nid: _transitions(org, nid) for nid in first}
    time.sleep(0.05)
    executor.sync(
        {
            climbing: _state(1, ProcessStatus.RUNNING, height=6),
            stopping: _state(1, ProcessStatus.STOPPED, height=8),
            repeated: _state(1, ProcessStatus.RUNNING, height=9),
        }
    )
    after = {nid: _node(org.owner, nid) for nid in first}
    assert after[climbing]["observed"]["processes"][0]["height"] == 6
    assert after[climbing]["phase"] == "RUNNING"
    assert after[climbing]["observedAt"] > before[climbing]["observedAt"]
    assert _transitions(org, climbing) == events[climbing]
    assert after[stopping]["observed"]["processes"][0] == {
        **before[stopping]["observed"]["processes"][0],
        "status": "stopped",
        "height": 8,
    }
    assert _transitions(org, stopping)[0]["payload"]["from"] == "running"
    assert len(_transitions(org, stopping)) == len(events[stopping]) + 1
    assert after[repeated]["observed"] == before[repeated]["observed"]
    # The next heartbeat repeats what was just stored, metric values included.
    assert (
        executor.sync(
            {
                climbing: _state(1, ProcessStatus.RUNNING, height=6),
                stopping: _state(1, ProcessStatus.STOPPED, height=8),
                repeated: _state(1, ProcessStatus.RUNNING, height=9),
            }
        )["rejected"]
        == []
    )
    assert {nid: _node(org.owner, nid)["observed"] for nid in first} == {
        nid: after[nid]["observed"] for nid in first
    }


def test_what_a_heartbeat_reads_of_a_node_is_what_the_loaded_node_holds(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    """A heartbeat reads its nodes' columns (services/node_facts.py), the spec's desired state
    extracted by the database (JSON on SQLite, JSONB on PostgreSQL), not the node whole: the
    metric rules read the same values from either."""
    running, stopped = (deploy(org.owner, executor, n)["id"] for n in ("up", "down"))
    act(org.owner, stopped, "STOP")
    executor.sync({running: _state(1, ProcessStatus.RUNNING, height=3)})

    async def read() -> tuple[dict[uuid.UUID, NodeFacts], dict[uuid.UUID, Node]]:
        db = Database(server.database_url)
        ids = [uuid.UUID(running), uuid.UUID(stopped)]
        try:
            async with db.read() as session:
                rows = await session.execute(select(*NODE_FACTS_COLUMNS).where(Node.id.in_(ids)))
                facts = {row.id: node_facts(row) for row in rows}
                loaded = {
                    n.id: n for n in await session.scalars(select(Node).where(Node.id.in_(ids)))
                }
        finally:
            await db.engine.dispose()
        return facts, loaded

    facts, loaded = asyncio.run(read())
    assert facts[uuid.UUID(running)].desired_state == "running"
    assert facts[uuid.UUID(stopped)].desired_state == "stopped"
    for node_id, fact in facts.items():
        node = loaded[node_id]
        assert dataclasses.asdict(fact) == {
            field.name: getattr(node, field.name) for field in dataclasses.fields(NodeFacts)
        }
    assert facts[uuid.UUID(running)].observed == loaded[uuid.UUID(running)].observed is not None
