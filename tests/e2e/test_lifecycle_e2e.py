"""Stop, start, restart and delete a real litecoind node from the control plane (DESIGN §5)."""

from typing import Any

from tests.e2e.conftest import wait_for
from tests.e2e.scenario import ChainRpc, Fleet, litecoin_spec, pid_alive, unit_active_state
from tests.support.agent import AgentProcess
from tests.support.fleet import Org

BLOCKS = 25


def _requested(fleet: Fleet, node_id: str) -> list[str]:
    return [e["payload"]["action"] for e in fleet.events(node_id, "node.lifecycle.requested")]


def test_stop_start_restart_keep_the_data(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    node_id = fleet.create("ltc-life", litecoin_spec())
    fleet.wait_phase(node_id, "RUNNING")
    rpc = ChainRpc.litecoin(agent.node_dir("ltc-life"))
    assert rpc.mine(BLOCKS) == BLOCKS
    fleet.wait_phase(node_id, "RUNNING", height=BLOCKS)
    first_pid = agent.main_pid("ltc-life")
    assert first_pid is not None and pid_alive(agent, first_pid)

    # Stop: at once `stopping` (the new revision is not applied yet), then `stopped`.
    assert fleet.lifecycle(node_id, "STOP")["phase"] == "STOPPING"
    stopped = fleet.wait_phase(node_id, "STOPPED")
    assert stopped["desiredState"] == "STOPPED"
    assert stopped["observed"]["processes"][0]["status"] == "stopped"
    assert unit_active_state(agent, "ltc-life") == "inactive"
    assert agent.main_pid("ltc-life") is None
    assert not pid_alive(agent, first_pid)
    assert agent.unit_exists("ltc-life")
    assert (agent.node_dir("ltc-life") / "data" / "regtest" / "blocks").is_dir()

    # Start: the same chain, at the same height.
    fleet.lifecycle(node_id, "START")
    fleet.wait_phase(node_id, "RUNNING", height=BLOCKS)
    assert rpc("getblockcount") == BLOCKS
    started_pid = agent.main_pid("ltc-life")
    assert started_pid is not None and started_pid != first_pid
    assert unit_active_state(agent, "ltc-life") == "active"

    # Restart: a new main process, the same data.
    tip = rpc("getbestblockhash")
    before = fleet.node(node_id)
    assert before is not None
    fleet.lifecycle(node_id, "RESTART")
    restarted = wait_for(
        lambda: (pid := agent.main_pid("ltc-life")) not in (None, started_pid) and pid,
        timeout=60,
        what="a new main pid",
    )
    node = fleet.wait_phase(node_id, "RUNNING", height=BLOCKS)
    assert node["observedRevision"] == node["revision"] == before["revision"] + 1
    assert node["spec"]["restartGeneration"] == before["spec"].get("restartGeneration", 0) + 1
    assert agent.main_pid("ltc-life") == restarted
    assert not pid_alive(agent, started_pid)
    assert rpc("getbestblockhash") == tip

    # Each step is in the events feed.
    assert _requested(fleet, node_id) == ["stop", "start", "restart"]
    transitions = fleet.transitions(node_id)
    expected = [
        ("running", "stopping"),  # stop requested
        ("stopping", "stopped"),  # the agent reported the unit down
        ("stopped", "configuring"),  # start requested
        ("running", "configuring"),  # restart requested
    ]
    assert in_order(expected, transitions), transitions
    assert transitions[-1][1] == "running", transitions


def in_order(expected: list[Any], seen: list[Any]) -> bool:
    """Whether `expected` occurs in `seen` in this order (other items may come between)."""
    remaining = iter(seen)
    return all(any(item == s for s in remaining) for item in expected)


def _delete_and_wait(fleet: Fleet, node_id: str, *, retain_data: bool) -> None:
    assert fleet.delete(node_id, retain_data=retain_data)["phase"] == "DELETING"
    wait_for(lambda: fleet.node(node_id) is None, timeout=60, what="node gone from the API")
    nodes = fleet.org.owner("{ nodes { items { id } } }")["nodes"]["items"]
    assert node_id not in {n["id"] for n in nodes}


def _teardown_events(fleet: Fleet, node_id: str) -> dict[str, dict[str, Any]]:
    events = {e["type"]: e for e in fleet.events(node_id)}
    assert {"node.created", "node.deleted", "node.removed"} <= events.keys(), events.keys()
    assert events["node.removed"]["actorType"] == "executor"
    assert events["node.removed"]["actor"] == f"executor:{fleet.agent.name}"
    return events


def test_delete_removes_units_and_directory(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    gone = fleet.create("ltc-gone", litecoin_spec())
    kept = fleet.create("ltc-kept", litecoin_spec())
    fleet.wait_phase(gone, "RUNNING")
    fleet.wait_phase(kept, "RUNNING")
    assert ChainRpc.litecoin(agent.node_dir("ltc-kept")).mine(3) == 3
    pids = {name: agent.main_pid(name) for name in ("ltc-gone", "ltc-kept")}
    assert all(pids.values())

    # retainData=false: units and <data_dir>/nodes/<name> are gone.
    _delete_and_wait(fleet, gone, retain_data=False)
    assert not agent.unit_exists("ltc-gone")
    assert unit_active_state(agent, "ltc-gone") in ("inactive", "unknown")
    assert not agent.node_dir("ltc-gone").exists()
    pid = pids["ltc-gone"]
    assert pid is not None and not pid_alive(agent, pid)
    events = _teardown_events(fleet, gone)
    assert events["node.deleted"]["payload"]["retainData"] is False
    assert events["node.removed"]["payload"]["retainData"] is False
    assert ("running", "deleting") in fleet.transitions(gone)

    # The other node was left alone.
    assert agent.main_pid("ltc-kept") == pids["ltc-kept"]

    # retainData=true: units are gone, the directory with its chain stays.
    _delete_and_wait(fleet, kept, retain_data=True)
    assert not agent.unit_exists("ltc-kept")
    pid = pids["ltc-kept"]
    assert pid is not None and not pid_alive(agent, pid)
    directory = agent.node_dir("ltc-kept")
    assert (directory / "config" / "litecoin.conf").is_file()
    assert (directory / "data" / "regtest" / "blocks").is_dir()
    events = _teardown_events(fleet, kept)
    assert events["node.deleted"]["payload"]["retainData"] is True
    assert events["node.removed"]["payload"]["retainData"] is True
