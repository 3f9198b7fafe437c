"""Changing a running node's client version in place with a real agent and real clients.

anvil in two releases (scripts/install-chain-clients.sh installs both under /var/cache/nodeplane,
the agent fixture offers them in <data_dir>/bin): a devnet node upgraded from one to the other keeps
its state file and block height, and rolled back it runs the old release on the same state.
"""

import time
from typing import Any

import pytest

from tests.e2e.scenario import ChainRpc, Fleet
from tests.e2e.test_anvil_e2e import anvil_versions
from tests.support.agent import AgentProcess
from tests.support.fleet import Org

UPDATE = """
mutation($input: UpdateNodeInput!) { updateNode(input: $input) { revision phase } }"""
ROLLBACK = """
mutation($id: UUID!, $to: Int!) { rollbackNode(nodeId: $id, toRevision: $to) { revision phase } }"""


def running_version(agent: AgentProcess, name: str) -> str:
    """What the running anvil itself says it is (`web3_clientVersion`: anvil/v1.5.1)."""
    rpc = ChainRpc(agent.node_dir(name), "execution.http")
    answer: str = rpc("web3_clientVersion")
    return answer


def height(agent: AgentProcess, name: str) -> int:
    return int(ChainRpc(agent.node_dir(name), "execution.http")("eth_blockNumber"), 16)


def wait_applied(fleet: Fleet, node_id: str, revision: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        node = fleet.node(node_id)
        if node and node["observedRevision"] == revision and node["phase"] == "RUNNING":
            return node
        return None

    result: dict[str, Any] = fleet.wait(node_id, check, f"revision {revision} running", 90)
    return result


@pytest.mark.parametrize("driver", ["process"], indirect=True)
def test_anvil_upgrade_in_place_then_roll_back(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    versions = anvil_versions(fleet.capabilities())
    assert len(versions) >= 2, f"the agent declares {versions}: run install-chain-clients.sh"
    old, new = versions[-1], versions[0]
    node_id = fleet.create(
        "eth-up",
        {
            "chain": "ethereum",
            "network": "devnet",
            "clients": {"execution": {"name": "anvil", "version": old}},
        },
    )
    fleet.wait_phase(node_id, "RUNNING", timeout=60)
    assert old in running_version(agent, "eth-up")
    # Let blocks be mined and dumped (anvil dumps every 10 s and on SIGTERM).
    state_file = fleet.wait(
        node_id,
        lambda: next(agent.node_dir("eth-up").rglob("anvil-state.json"), None),
        "anvil's first state dump",
        30,
    )
    before = height(agent, "eth-up")
    assert before >= 2

    upgraded = e2e_org.owner(
        UPDATE,
        {"input": {"nodeId": node_id, "clients": {"execution": {"name": "anvil", "version": new}}}},
    )["updateNode"]
    assert upgraded["revision"] == 2
    phases = {upgraded["phase"]}

    def upgraded_and_running() -> dict[str, Any] | None:
        n = fleet.node(node_id)
        if n is None:
            return None
        phases.add(n["phase"])
        return n if n["observedRevision"] == 2 and n["phase"] == "RUNNING" else None

    node = fleet.wait(node_id, upgraded_and_running, "upgraded and running", 90)
    assert "CONFIGURING" in phases, phases
    assert new in running_version(agent, "eth-up")
    assert state_file.exists()
    after = height(agent, "eth-up")
    assert after >= before, (before, after)
    assert node["observed"]["processes"][0]["height"] >= before

    time.sleep(2)
    mid = height(agent, "eth-up")
    rolled = e2e_org.owner(ROLLBACK, {"id": node_id, "to": 1})["rollbackNode"]
    assert rolled["revision"] == 3
    wait_applied(fleet, node_id, 3)
    assert old in running_version(agent, "eth-up")
    assert height(agent, "eth-up") >= mid
    feed = [e["type"] for e in fleet.events(node_id)]
    assert "node.updated" in feed and "node.rolled_back" in feed
