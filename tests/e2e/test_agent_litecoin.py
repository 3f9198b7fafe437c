"""A litecoin regtest node deployed from the control plane runs under a real agent."""

from typing import Any

from tests.e2e.conftest import wait_for
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, NODE, Org

LITECOIND_VERSION = "0.21.2.1"


def litecoin_spec(**extra: Any) -> dict[str, Any]:
    return {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": LITECOIND_VERSION}},
        **extra,
    }


def executor_id(org: Org, agent: AgentProcess) -> str:
    executors = org.owner("{ executors { id name } }")["executors"]
    return next(e["id"] for e in executors if e["name"] == agent.name)


def node(org: Org, node_id: str) -> dict[str, Any]:
    data: dict[str, Any] = org.owner(NODE, {"id": node_id})["node"]
    return data


def test_litecoin_regtest_node_reaches_running(e2e_org: Org, agent: AgentProcess) -> None:
    created = e2e_org.owner(
        CREATE_NODE,
        {
            "input": {
                "executorId": executor_id(e2e_org, agent),
                "name": "ltc-a",
                "spec": litecoin_spec(),
            }
        },
    )["createNode"]
    running = wait_for(
        lambda: (n := node(e2e_org, created["id"]))["phase"] == "RUNNING" and n,
        timeout=90,
        what="node running",
    )
    process = running["observed"]["processes"][0]
    assert process["height"] == 0 and process["peers"] == 0
    assert process["diskTotalBytes"] > 0 and process["memoryBytes"] > 0
    assert agent.main_pid("ltc-a") is not None
    assert (agent.node_dir("ltc-a") / "config" / "litecoin.conf").exists()
    assert agent.unit_exists("ltc-a")
