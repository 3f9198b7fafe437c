"""A chain client killed with SIGKILL: restarted per its policy, or reported `error`; never silent."""

import time
from typing import Any

from tests.e2e.scenario import (
    Fleet,
    kill_main_process,
    litecoin_spec,
    pid_alive,
    unit_active_state,
)
from tests.support.agent import AgentProcess
from tests.support.fleet import Org


def _runtime_events(fleet: Fleet, node_id: str) -> list[dict[str, Any]]:
    return [e for e in fleet.events(node_id, "node.process.*") if e["source"] == "runtime"]


def test_killed_client_is_restarted_by_default(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    node_id = fleet.create("ltc-crash", litecoin_spec())
    fleet.wait_phase(node_id, "RUNNING")
    assert _runtime_events(fleet, node_id) == []

    killed = kill_main_process(agent, "ltc-crash")

    # Restart=on-failure (the default): the driver brings the client back on its own.
    new_pid = fleet.wait(
        node_id,
        lambda: (pid := agent.main_pid("ltc-crash")) not in (None, killed) and pid,
        what="the client restarted",
    )
    assert pid_alive(agent, new_pid)
    node = fleet.wait_phase(node_id, "RUNNING", pid=new_pid)
    # The spec was not touched: the driver restarted it, not a new revision.
    assert node["revision"] == node["observedRevision"] == 1
    events = fleet.wait(node_id, lambda: _runtime_events(fleet, node_id), "a runtime event", 30)
    assert {e["type"] for e in events} <= {"node.process.restarted", "node.process.crashed"}
    assert "node.process.restarted" in {e["type"] for e in events}
    assert all(e["nodeId"] == node_id and e["executorId"] for e in events)
    restarted = next(e for e in events if e["type"] == "node.process.restarted")
    assert restarted["level"] == "WARN"
    assert restarted["payload"]["unit"] == "nodeplane-ltc-crash-node.service"
    assert restarted["payload"]["restarts"] >= 1
    # The exit is named by its signal (systemd forgets it at the restart: read from the log).
    assert restarted["message"] == (
        "nodeplane-ltc-crash-node.service exited (killed by SIGKILL) and was restarted"
    )
    assert restarted["payload"]["exitSignal"] == 9


def test_killed_client_without_restart_policy_is_an_error(
    e2e_org: Org, agent: AgentProcess
) -> None:
    fleet = Fleet(e2e_org, agent)
    node_id = fleet.create("ltc-norestart", litecoin_spec(agent={"restartPolicy": "no"}))
    fleet.wait_phase(node_id, "RUNNING")

    killed = kill_main_process(agent, "ltc-norestart")

    node = fleet.wait_phase(node_id, "ERROR", timeout=30)
    assert node["observed"]["processes"][0]["status"] == "error"
    events = fleet.wait(node_id, lambda: _runtime_events(fleet, node_id), "a runtime event", 30)
    crashed = next(e for e in events if e["type"] == "node.process.crashed")
    assert crashed["level"] == "ERROR"
    assert crashed["payload"]["unit"] == "nodeplane-ltc-norestart-node.service"
    assert ("running", "error") in fleet.transitions(node_id)

    # Nobody brings it back: not the driver, not the reconciler (several of its ticks pass).
    time.sleep(4)
    assert agent.main_pid("ltc-norestart") is None
    assert unit_active_state(agent, "ltc-norestart") == "failed"
    still = fleet.node(node_id)
    assert still is not None and still["phase"] == "ERROR"
    assert [e["type"] for e in _runtime_events(fleet, node_id)].count("node.process.crashed") == 1

    # An explicit restart starts it again.
    fleet.lifecycle(node_id, "RESTART")
    fleet.wait_phase(node_id, "RUNNING")
    assert agent.main_pid("ltc-norestart") not in (None, killed)
