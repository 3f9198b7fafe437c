"""Changing a running node's client version in place with a real agent and real clients.

anvil in two releases (scripts/install-chain-clients.sh installs both under /var/cache/nodeplane,
the agent fixture offers them in <data_dir>/bin): a devnet node upgraded from one to the other keeps
its state file and block height, and rolled back it runs the old release on the same state.
"""

import json
import subprocess
import time
from typing import Any

from tests.e2e.conftest import wait_for
from tests.e2e.scenario import LITECOIND_VERSION, ChainRpc, Fleet, litecoin_spec
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
    node = fleet.wait_phase(node_id, "RUNNING", timeout=60, clientVersion=old)
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
    # The agent reports what runs, as the client says it: the new release.
    fleet.wait_phase(node_id, "RUNNING", clientVersion=new)
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
    fleet.wait_phase(node_id, "RUNNING", clientVersion=old)
    assert height(agent, "eth-up") >= mid
    feed = [e["type"] for e in fleet.events(node_id)]
    assert "node.updated" in feed and "node.rolled_back" in feed


BROKEN_VERSION = "0.21.9"
# A litecoind that answers `--version` like the real one and refuses to start: what a bad
# release looks like to the agent. Compiled, because the resolver skips `#!` launchers.
BROKEN_SOURCE = r"""
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("Litecoin Core version v%s");
        return 0;
    }
    fputs("Error: broken test build %s refuses to start\n", stderr);
    return 1;
}
"""


def install_broken_litecoind(agent: AgentProcess) -> None:
    """Put the broken build where the binary resolver finds versions (<data_dir>/bin) and
    restart the agent so it declares it (its nodes keep running)."""
    source = agent.workdir / "broken.c"
    source.write_text(BROKEN_SOURCE % (BROKEN_VERSION, BROKEN_VERSION))
    target = agent.data_dir / "bin" / f"litecoind-{BROKEN_VERSION}"
    subprocess.run(["cc", "-O0", "-o", str(target), str(source)], check=True)
    agent.stop()
    agent.start()


def declared_litecoind(fleet: Fleet) -> list[str]:
    chain = next(c for c in fleet.capabilities()["chains"] if c["chain"] == "litecoin")
    clients = chain["roles"][0]["clients"]
    versions: list[str] = next(c for c in clients if c["name"] == "litecoind")["versions"]
    return versions


def test_litecoind_version_that_does_not_start_errors_then_rolls_back_by_itself(
    e2e_org: Org, agent: AgentProcess
) -> None:
    fleet = Fleet(e2e_org, agent)
    install_broken_litecoind(agent)
    wait_for(lambda: BROKEN_VERSION in declared_litecoind(fleet), 60, "broken build declared")
    spec = litecoin_spec(rollout={"healthWindowSeconds": 15, "autoRollback": False})
    node_id = fleet.create("ltc-bad", spec)
    fleet.wait_phase(node_id, "RUNNING")
    rpc = ChainRpc.litecoin(agent.node_dir("ltc-bad"))
    rpc.mine(5)
    fleet.wait_phase(node_id, "RUNNING", height=5)

    # Without autoRollback: the broken version reaches `error` with the client's own words.
    e2e_org.owner(
        UPDATE,
        {
            "input": {
                "nodeId": node_id,
                "clients": {"node": {"name": "litecoind", "version": BROKEN_VERSION}},
            }
        },
    )
    node = fleet.wait_phase(node_id, "ERROR", timeout=90)
    said = json.dumps(node["observed"])
    assert "refuses to start" in said, said
    assert node["revision"] == 2

    # With autoRollback: the next failure of that version goes back to revision 1 by itself.
    e2e_org.owner(UPDATE, {"input": {"nodeId": node_id, "rollout": {"autoRollback": True}}})
    rolled = fleet.wait(
        node_id,
        lambda: (n := fleet.node(node_id)) and n["revision"] == 4 and n,
        "the auto-rollback revision",
        90,
    )
    assert rolled["spec"]["clients"]["node"]["version"] == LITECOIND_VERSION
    node = wait_applied(fleet, node_id, 4)
    assert node["observed"]["processes"][0]["height"] >= 5  # the same chain data
    fleet.wait_phase(node_id, "RUNNING", clientVersion=LITECOIND_VERSION)
    (event,) = fleet.events(node_id, "node.auto_rolled_back")
    assert event["payload"]["failedRevision"] == 3 and event["payload"]["toRevision"] == 1
    assert "did not reach running or syncing within 15 s" in event["payload"]["reason"]
    history = e2e_org.owner(
        "query($id: UUID!) { nodeRevisions(nodeId: $id) { revision cause } }", {"id": node_id}
    )["nodeRevisions"]
    assert [h["cause"] for h in history] == [
        "created",
        "configuration updated",
        "configuration updated",
        "auto-rollback",
    ]
