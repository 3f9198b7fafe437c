"""An ethereum devnet node on anvil, deployed from the control plane, runs and makes blocks."""

import time
from typing import Any

from tests.e2e.scenario import ChainRpc, Fleet
from tests.support.agent import AgentProcess
from tests.support.fleet import Org


def anvil_versions(capabilities: dict[str, Any]) -> list[str]:
    """The anvil versions the agent declared for ethereum devnet."""
    ethereum = next(c for c in capabilities["chains"] if c["chain"] == "ethereum")
    assert "devnet" in ethereum["networks"]
    execution = next(r for r in ethereum["roles"] if r["role"] == "execution")
    anvil = next(c for c in execution["clients"] if c["name"] == "anvil")
    versions: list[str] = anvil["versions"]
    return versions


def test_anvil_devnet_runs_and_its_height_rises(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    versions = anvil_versions(fleet.capabilities())
    assert versions, "the agent declares no installed anvil"
    node_id = fleet.create(
        "eth-dev",
        {
            "chain": "ethereum",
            "network": "devnet",
            "clients": {"execution": {"name": "anvil", "version": versions[0]}},
        },
    )
    node = fleet.wait_phase(node_id, "RUNNING", timeout=60)
    process = node["observed"]["processes"][0]
    assert process["role"] == "execution"
    assert process["pid"] == agent.main_pid("eth-dev", "execution")
    assert agent.unit_exists("eth-dev", "execution")

    # Heights as the API reports them rise: anvil mines a block every second.
    first = process["height"]
    time.sleep(5)
    later = fleet.wait_phase(node_id, "RUNNING")["observed"]["processes"][0]["height"]
    assert later >= first + 2, (first, later)

    # And they are the chain's own: anvil's JSON-RPC agrees within a few blocks.
    rpc = ChainRpc(agent.node_dir("eth-dev"), "execution.http")
    chain_height = int(rpc("eth_blockNumber"), 16)
    latest = fleet.wait_phase(node_id, "RUNNING")["observed"]["processes"][0]["height"]
    assert 0 <= chain_height - latest <= 5, (chain_height, latest)
    assert int(rpc("eth_chainId"), 16) > 0
