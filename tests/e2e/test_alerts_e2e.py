"""Alerts from real parts: a real agent on the process driver running real litecoind regtest
nodes. A litecoind killed by hand opens node_down and running again resolves it, and a real
receiver on loopback gets both as signed webhook deliveries; a killed agent
opens executor_offline and its return resolves it; a node cut off from its peer while the peer
mines opens sync_stalled and catching up resolves it."""

import contextlib
import json
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.scenario import ChainRpc, Fleet, kill_main_process, litecoin_spec
from tests.support.agent import AgentProcess
from tests.support.fleet import Org
from tests.support.webhook_receiver import webhook_receiver
from tests.support.webhooks import create_endpoint, verify

INCIDENTS = """query($f: IncidentFilter) { incidents(filter: $f, first: 200) { items {
  id rule state subjectKind subjectId subjectName nodeId executorId message value threshold
  details openedAt resolvedAt resolution } } }"""
SET_OVERRIDE = """mutation($n: UUID!, $r: AlertRule!, $t: Float) {
  setNodeAlertOverride(nodeId: $n, rule: $r, threshold: $t) { rule threshold } }"""


@pytest.fixture
def driver() -> str:
    """The process driver: its litecoind is a plain process the test can stop by hand."""
    return "process"


def incidents_of(org: Org, subject: str, rule: str) -> list[dict[str, Any]]:
    items = org.owner(INCIDENTS, {"f": {"rule": rule}})["incidents"]["items"]
    return [i for i in items if i["subjectId"] == subject]


def open_incident(org: Org, subject: str, rule: str) -> dict[str, Any] | None:
    return next((i for i in incidents_of(org, subject, rule) if i["state"] == "OPEN"), None)


def alert_events(fleet: Fleet, node_id: str) -> list[dict[str, Any]]:
    return fleet.events(node_id, "notification.alert.*")


def test_litecoind_stopped_by_hand_opens_node_down_and_a_killed_agent_executor_offline(
    e2e_org: Org, agent: AgentProcess
) -> None:
    with contextlib.ExitStack() as stack:
        _stopped_by_hand(e2e_org, agent, stack)


def _stopped_by_hand(e2e_org: Org, agent: AgentProcess, stack: contextlib.ExitStack) -> None:
    fleet = Fleet(e2e_org, agent)
    receiver = stack.enter_context(webhook_receiver())
    _, secret = create_endpoint(e2e_org.owner, receiver.url)
    # No restart policy: the client stays down once stopped, as an operator's `kill` leaves it.
    node_id = fleet.create("ltc-alert", litecoin_spec(agent={"restartPolicy": "no"}))
    fleet.wait_phase(node_id, "RUNNING")
    assert incidents_of(e2e_org, node_id, "NODE_DOWN") == []

    # Stopped by hand, behind nodeplane's back (`kill -9`). A clean exit (SIGTERM) is a stop
    # the reconciler undoes within a tick, as the desired state says running; a killed client
    # without a restart policy stays down.
    killed = kill_main_process(agent, "ltc-alert")
    incident = fleet.wait(
        node_id,
        lambda: open_incident(e2e_org, node_id, "NODE_DOWN"),
        "node_down opened",
        timeout=30,
    )
    assert incident["subjectName"] == "ltc-alert"
    assert incident["details"]["processes"] == {"node": "error"}
    [opened] = alert_events(fleet, node_id)
    assert opened["type"] == "notification.alert.opened"
    assert opened["payload"]["incidentId"] == incident["id"]
    assert opened["payload"]["executorName"] == agent.name

    # Running again resolves it.
    fleet.lifecycle(node_id, "RESTART")
    fleet.wait_phase(node_id, "RUNNING")
    assert agent.main_pid("ltc-alert") not in (None, killed)
    resolved = fleet.wait(
        node_id,
        lambda: (r := incidents_of(e2e_org, node_id, "NODE_DOWN")[0])["state"] == "RESOLVED" and r,
        "node_down resolved",
        timeout=30,
    )
    assert resolved["id"] == incident["id"] and resolved["resolution"] == "condition cleared"
    assert [e["type"] for e in alert_events(fleet, node_id)] == [
        "notification.alert.opened",
        "notification.alert.resolved",
    ]
    assert len(incidents_of(e2e_org, node_id, "NODE_DOWN")) == 1
    # Both transitions reached the receiver, signed with the endpoint's secret (deliveries are
    # not ordered: the event id is).
    delivered = sorted(receiver.wait_for(2), key=lambda r: json.loads(r.body)["event"]["id"])
    for request, state in zip(delivered, ("open", "resolved"), strict=True):
        assert verify(secret, request.headers, request.body)
        payload = json.loads(request.body)["event"]["payload"]
        assert (payload["incidentId"], payload["state"]) == (incident["id"], state)

    # The agent dies (its litecoind keeps running): executor_offline, with the node counted.
    executor_id = fleet.executor_id
    agent.kill()
    offline = wait_for(
        lambda: open_incident(e2e_org, executor_id, "EXECUTOR_OFFLINE"),
        timeout=60,
        what="executor_offline opened",
    )
    assert (offline["subjectKind"], offline["subjectName"]) == ("executor", agent.name)
    assert offline["value"] == 1.0
    # Its node's last report stays as it was: no node incident comes of the silence.
    assert open_incident(e2e_org, node_id, "NODE_DOWN") is None

    agent.start()
    back = wait_for(
        lambda: (
            (r := incidents_of(e2e_org, executor_id, "EXECUTOR_OFFLINE")[0])["state"] == "RESOLVED"
            and r
        ),
        timeout=60,
        what="executor_offline resolved",
    )
    assert back["id"] == offline["id"] and back["resolution"] == "executor reconnected"
    fleet.wait_phase(node_id, "RUNNING")
    assert open_incident(e2e_org, node_id, "NODE_DOWN") is None


def test_a_partitioned_node_whose_peer_mines_opens_sync_stalled_until_it_catches_up(
    e2e_org: Org, agent: AgentProcess
) -> None:
    fleet = Fleet(e2e_org, agent)
    miner_id = fleet.create("ltc-head", litecoin_spec())
    fleet.wait_phase(miner_id, "RUNNING")
    miner = ChainRpc.litecoin(agent.node_dir("ltc-head"))
    assert miner.mine(5) == 5
    follower_id = fleet.create(
        "ltc-cut", litecoin_spec(f"-connect=127.0.0.1:{miner.port('node.p2p')}")
    )
    fleet.wait_phase(follower_id, "RUNNING", height=5, peers=1)
    follower = ChainRpc.litecoin(agent.node_dir("ltc-cut"))
    # A short stall time for this node (litecoin's own is 20 minutes).
    e2e_org.owner(SET_OVERRIDE, {"n": follower_id, "r": "SYNC_STALLED", "t": 5})

    # Cut off from its only peer, which keeps mining.
    follower("setnetworkactive", False)
    fleet.wait_phase(follower_id, "RUNNING", height=5, peers=0)
    assert miner.mine(3) == 8
    incident = fleet.wait(
        follower_id,
        lambda: open_incident(e2e_org, follower_id, "SYNC_STALLED"),
        "sync_stalled opened",
        timeout=60,
    )
    assert incident["details"]["height"] == 5 and incident["details"]["peers"] == 0
    assert incident["threshold"] == 5.0 and incident["value"] >= 5.0
    assert "no peers" in incident["message"]
    # The miner, whose height moved, and a lone node with no peers by design are not stalled.
    assert incidents_of(e2e_org, miner_id, "SYNC_STALLED") == []

    follower("setnetworkactive", True)
    fleet.wait_phase(follower_id, "RUNNING", height=8, timeout=90)
    resolved = fleet.wait(
        follower_id,
        lambda: (
            (r := incidents_of(e2e_org, follower_id, "SYNC_STALLED")[0])["state"] == "RESOLVED"
            and r
        ),
        "sync_stalled resolved",
        timeout=30,
    )
    assert resolved["id"] == incident["id"]
    assert [e["type"] for e in alert_events(fleet, follower_id)] == [
        "notification.alert.opened",
        "notification.alert.resolved",
    ]
