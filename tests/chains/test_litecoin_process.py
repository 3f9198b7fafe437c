"""A real litecoind in regtest, started from the rendered argv and judged by the adapter's probe."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.protocol import NodeSpec, ProcessStatus
from tests.chains.support import LocalProcess, probe_until, render_node

pytestmark = pytest.mark.anyio

BLOCKS = 200


def regtest_spec(version: str, args: list[str] | None = None) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": version}},
            "overrides": {"args": {"node": args or []}},
        }
    )


@pytest.fixture
def started() -> Iterator[list[LocalProcess]]:
    """Processes started by a test, stopped (gracefully) whatever happens."""
    processes: list[LocalProcess] = []
    yield processes
    for process in processes:
        process.stop()


def start(
    root: Path, binary: Path, spec: NodeSpec, started: list[LocalProcess]
) -> tuple[LocalProcess, int]:
    """Render and start a node under `root`; returns it and its P2P port."""
    plan, ports = render_node(LITECOIN, spec, root, {"node": binary})
    process = LocalProcess(plan.processes[0])
    started.append(process)
    process.start()
    return process, ports["node.p2p"]


def mine(node: LocalProcess, blocks: int) -> None:
    """Mine to an anyone-can-spend script: no wallet needed."""
    descriptor = node.rpc("getdescriptorinfo", "raw(51)")["descriptor"]
    node.rpc("generatetodescriptor", blocks, descriptor)


def copy_headers(source: LocalProcess, target: LocalProcess, height: int) -> None:
    """Give `target` the header chain of `source` without any block."""
    hashes = source.rpc_batch([("getblockhash", [h]) for h in range(1, height + 1)])
    headers = source.rpc_batch([("getblockheader", [h, False]) for h in hashes])
    target.rpc_batch([("submitheader", [header]) for header in headers])


async def test_fresh_regtest_node_is_running_then_a_second_node_syncs(
    tmp_path: Path, litecoind: tuple[Path, str], started: list[LocalProcess]
) -> None:
    binary, version = litecoind
    miner, miner_p2p = start(tmp_path / "miner", binary, regtest_spec(version), started)

    # A fresh regtest chain says initialblockdownload=true, yet nothing is ahead of it.
    fresh = await probe_until(LITECOIN, miner, lambda r: r.status != ProcessStatus.STARTING)
    assert fresh.status == ProcessStatus.RUNNING
    assert (fresh.height, fresh.network_height, fresh.peers) == (0, 0, 0)
    assert miner.rpc("getblockchaininfo")["initialblockdownload"] is True

    mine(miner, BLOCKS)
    mined = await probe_until(LITECOIN, miner, lambda r: r.height == BLOCKS)
    assert mined.status == ProcessStatus.RUNNING

    # The follower connects to the miner only (-connect from overrides.args), whose network is
    # off for now: that holds the follower still while it learns the headers, so "syncing" is
    # observed deterministically rather than raced.
    miner.rpc("setnetworkactive", False)
    follower_spec = regtest_spec(version, [f"-connect=127.0.0.1:{miner_p2p}"])
    follower, _ = start(tmp_path / "follower", binary, follower_spec, started)
    seen: list[ProcessStatus] = []
    alone = await probe_until(
        LITECOIN, follower, lambda r: r.status != ProcessStatus.STARTING, seen=seen
    )
    assert (alone.status, alone.height) == (ProcessStatus.RUNNING, 0)
    # The miner drops each connection the follower opens (its network is off), so the follower
    # may be seen with that one short-lived peer; what matters is that nothing is ahead of it.
    assert alone.peers in (0, 1) and alone.network_height in (None, 0)

    copy_headers(miner, follower, BLOCKS)
    behind = await probe_until(LITECOIN, follower, lambda r: r.network_height == BLOCKS, seen=seen)
    assert behind.status == ProcessStatus.SYNCING
    assert behind.height == 0
    assert behind.sync_progress == 0.0

    miner.rpc("setnetworkactive", True)
    caught_up = await probe_until(
        LITECOIN, follower, lambda r: r.status == ProcessStatus.RUNNING, seen=seen, within_s=90
    )
    assert caught_up.height == caught_up.network_height == BLOCKS
    assert caught_up.peers == 1
    assert caught_up.sync_progress == 1.0
    assert seen[-2:] == [ProcessStatus.SYNCING, ProcessStatus.RUNNING]
    assert follower.rpc("getbestblockhash") == miner.rpc("getbestblockhash")

    # The miner sees the follower as a peer and stays running.
    miner_view = await probe_until(LITECOIN, miner, lambda r: r.peers == 1)
    assert miner_view.status == ProcessStatus.RUNNING


async def test_follower_added_later_catches_up_to_the_same_height(
    tmp_path: Path, litecoind: tuple[Path, str], started: list[LocalProcess]
) -> None:
    binary, version = litecoind
    miner, miner_p2p = start(tmp_path / "miner", binary, regtest_spec(version), started)
    await probe_until(LITECOIN, miner, lambda r: r.status == ProcessStatus.RUNNING)
    mine(miner, BLOCKS)

    follower, _ = start(tmp_path / "follower", binary, regtest_spec(version), started)
    await probe_until(LITECOIN, follower, lambda r: r.status == ProcessStatus.RUNNING)
    follower.rpc("addnode", f"127.0.0.1:{miner_p2p}", "onetry")
    done = await probe_until(
        LITECOIN,
        follower,
        lambda r: r.status == ProcessStatus.RUNNING and r.height == BLOCKS,
        within_s=90,
    )
    assert done.network_height == BLOCKS
    assert done.peers == 1


async def test_probe_reports_starting_until_rpc_answers(
    tmp_path: Path, litecoind: tuple[Path, str], started: list[LocalProcess]
) -> None:
    binary, version = litecoind
    plan, _ = render_node(LITECOIN, regtest_spec(version), tmp_path / "n", {"node": binary})
    process = LocalProcess(plan.processes[0])
    # Not started: no cookie, nothing listening.
    not_yet = await probe_until(LITECOIN, process, lambda r: True)
    assert not_yet.status == ProcessStatus.STARTING
    assert not_yet.message
    started.append(process)
    process.start()
    up = await probe_until(LITECOIN, process, lambda r: r.status == ProcessStatus.RUNNING)
    assert up.height == 0


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on, from its socket descriptors and /proc/net."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


async def test_a_node_listens_on_the_ports_allocated_to_it_and_no_other(
    tmp_path: Path, litecoind: tuple[Path, str], started: list[LocalProcess]
) -> None:
    """litecoind also listens for inbound Tor connections, by default on a port fixed per
    network (127.0.0.1:19444 in Litecoin's regtest, its P2P port): every node of a host would
    claim it, and one given 19444 for P2P could not start again once another held it (found
    by the fault test). The rendered config names an allocated port for it instead."""
    binary, version = litecoind
    plan, ports = render_node(LITECOIN, regtest_spec(version), tmp_path / "n", {"node": binary})
    process = LocalProcess(plan.processes[0])
    started.append(process)
    process.start()
    await probe_until(LITECOIN, process, lambda r: r.status == ProcessStatus.RUNNING)
    assert process.proc is not None
    assert listening_ports(process.proc.pid) == set(ports.values())
    assert set(ports) == {"node.rpc", "node.p2p", "node.onion"}
