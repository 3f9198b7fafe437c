"""A second litecoind node, connected to a first one that mined, is seen syncing, then running."""

from tests.e2e.scenario import ChainRpc, Fleet, litecoin_spec
from tests.support.agent import AgentProcess
from tests.support.fleet import Org

BLOCKS = 300


def copy_headers(source: ChainRpc, target: ChainRpc, height: int) -> None:
    """Give `target` the header chain of `source` without any block."""
    hashes = source.batch([("getblockhash", [h]) for h in range(1, height + 1)])
    headers = source.batch([("getblockheader", [h, False]) for h in hashes])
    target.batch([("submitheader", [header]) for header in headers])


def test_second_node_syncs_from_the_first(e2e_org: Org, agent: AgentProcess) -> None:
    fleet = Fleet(e2e_org, agent)
    miner_id = fleet.create("ltc-miner", litecoin_spec())
    fleet.wait_phase(miner_id, "RUNNING")
    miner = ChainRpc.litecoin(agent.node_dir("ltc-miner"))
    assert miner.mine(BLOCKS) == BLOCKS
    fleet.wait_phase(miner_id, "RUNNING", height=BLOCKS)

    # The follower connects to the miner only. The miner's network is off for now: that holds the
    # follower at height 0 while it learns the headers, so `syncing` is seen, not raced.
    miner("setnetworkactive", False)
    follower_id = fleet.create(
        "ltc-follower", litecoin_spec(f"-connect=127.0.0.1:{miner.port('node.p2p')}")
    )
    fleet.wait_phase(follower_id, "RUNNING", height=0, peers=0)
    follower = ChainRpc.litecoin(agent.node_dir("ltc-follower"))
    copy_headers(miner, follower, BLOCKS)

    syncing = fleet.wait_phase(follower_id, "SYNCING", timeout=30)
    behind = syncing["observed"]["processes"][0]
    assert behind["status"] == "syncing"
    assert behind["height"] == 0
    assert behind["networkHeight"] == BLOCKS
    assert behind["syncProgress"] == 0.0

    miner("setnetworkactive", True)
    caught_up = fleet.wait_phase(follower_id, "RUNNING", timeout=90, height=BLOCKS)
    process = caught_up["observed"]["processes"][0]
    assert process["networkHeight"] == BLOCKS
    assert process["peers"] == 1
    assert process["syncProgress"] == 1.0

    miner_seen = fleet.wait_phase(miner_id, "RUNNING", peers=1)
    assert miner_seen["observed"]["processes"][0]["height"] == process["height"] == BLOCKS
    assert follower("getbestblockhash") == miner("getbestblockhash")

    # The feed saw the follower go running → syncing → running.
    transitions = fleet.transitions(follower_id)
    assert ("running", "syncing") in transitions, transitions
    assert transitions[-1] == ("syncing", "running"), transitions
