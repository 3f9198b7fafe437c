"""Probe decisions as tables (pure), plus the EL/CL probes over an in-process HTTP transport.

geth and lighthouse cannot be installed here; their probe glue is exercised against canned
answers shaped like the real APIs. litecoind and anvil are probed for real elsewhere.
"""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeplane.chains.base import ProcessPlan, RpcEndpoint
from nodeplane.chains.bitcoin_family import chain_status
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.ethereum.probes import consensus_status, execution_status
from nodeplane.protocol import ProcessStatus

pytestmark = pytest.mark.anyio
S, R = ProcessStatus.SYNCING, ProcessStatus.RUNNING


def info(blocks: int, headers: int, ibd: bool, vp: float = 1.0) -> dict[str, Any]:
    return {
        "blocks": blocks,
        "headers": headers,
        "initialblockdownload": ibd,
        "verificationprogress": vp,
    }


def peer(starting: int, synced_headers: int = -1, synced_blocks: int = -1) -> dict[str, int]:
    return {
        "startingheight": starting,
        "synced_headers": synced_headers,
        "synced_blocks": synced_blocks,
    }


@pytest.mark.parametrize(
    ("chain_info", "peers", "regtest", "status", "height", "network_height"),
    [
        # Fresh regtest: IBD flag set forever until a block is mined, but nothing is ahead.
        (info(0, 0, True, 1.0), [], True, R, 0, 0),
        (info(200, 200, False), [peer(0)], True, R, 200, 200),
        # A regtest follower connected to a peer 200 blocks ahead.
        (info(0, 0, True), [peer(200)], True, S, 0, 200),
        (info(120, 200, True), [peer(200, 200, 120)], True, S, 120, 200),
        (info(200, 200, False), [peer(200, 200, 200)], True, R, 200, 200),
        # Headers learned, blocks not yet.
        (info(0, 200, True), [], True, S, 0, 200),
        # Mainnet: IBD decides; a peer's claimed height is not trusted.
        (info(800_000, 800_000, True, 0.97), [], False, S, 800_000, 800_000),
        (info(800_000, 800_010, False), [], False, S, 800_000, 800_010),
        (info(850_000, 850_000, False, 0.99999), [peer(10**9)], False, R, 850_000, 850_000),
    ],
)
def test_bitcoin_family_status(
    chain_info: dict[str, Any],
    peers: list[dict[str, int]],
    regtest: bool,
    status: ProcessStatus,
    height: int,
    network_height: int,
) -> None:
    result = chain_status(chain_info, peers, regtest=regtest)
    assert (result.status, result.height, result.network_height) == (
        status,
        height,
        network_height,
    )
    assert result.peers == len(peers)
    assert result.sync_progress is not None and 0.0 <= result.sync_progress <= 1.0


def test_bitcoin_family_progress() -> None:
    assert chain_status(info(50, 200, True), [], regtest=True).sync_progress == 0.25
    assert chain_status(info(10, 10, True, 0.4), [], regtest=False).sync_progress == 0.4
    assert chain_status(info(10, 10, False, 1.2), [], regtest=False).sync_progress == 1.0


@pytest.mark.parametrize(
    ("syncing", "number", "peers", "status", "height", "network_height"),
    [
        ({"currentBlock": "0x10", "highestBlock": "0x20"}, "0x10", "0x5", S, 16, 32),
        (False, "0x1312d00", "0x19", R, 20_000_000, 20_000_000),
        # Not syncing yet at block 0: waiting for the CL or peers.
        (False, "0x0", "0x0", S, 0, None),
    ],
)
def test_execution_status(
    syncing: Any,
    number: str,
    peers: str,
    status: ProcessStatus,
    height: int,
    network_height: int | None,
) -> None:
    result = execution_status(syncing, number, peers)
    assert (result.status, result.height, result.network_height) == (
        status,
        height,
        network_height,
    )
    assert result.peers == int(peers, 16)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (
            {"head_slot": "100", "sync_distance": "0", "is_syncing": False, "is_optimistic": False},
            R,
            None,
        ),
        ({"head_slot": "100", "sync_distance": "900", "is_syncing": True}, S, None),
        (
            {"head_slot": "100", "sync_distance": "0", "is_syncing": False, "is_optimistic": True},
            S,
            "optimistic",
        ),
        (
            {"head_slot": "100", "sync_distance": "0", "is_syncing": False, "el_offline": True},
            S,
            "offline",
        ),
    ],
)
def test_consensus_status(data: dict[str, Any], status: ProcessStatus, message: str | None) -> None:
    result = consensus_status(data, {"connected": "42", "disconnected": "3"})
    assert result.status == status
    assert result.peers == 42
    assert result.height == 100
    assert result.network_height == 100 + int(data["sync_distance"])
    assert (message is None and result.message is None) or (
        message is not None and result.message is not None and message in result.message
    )


def transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def process(role: str, client: str, network: str = "mainnet") -> ProcessPlan:
    return ProcessPlan(
        role=role,
        client=client,
        version="1",
        argv=("/x",),
        working_dir=Path("/tmp"),
        rpc=RpcEndpoint(url="http://127.0.0.1:8545"),
        network=network,
    )


async def test_execution_probe_speaks_json_rpc() -> None:
    answers = {"eth_syncing": False, "eth_blockNumber": "0x64", "net_peerCount": "0x3"}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "result": answers[body["method"]]}
        )

    async with transport(handler) as http:
        result = await ETHEREUM.probe(process("execution", "geth"), http)
    assert (result.status, result.height, result.peers) == (R, 100, 3)


async def test_consensus_probe_reads_the_beacon_api() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/eth/v1/node/syncing":
            return httpx.Response(
                200,
                json={"data": {"head_slot": "7", "sync_distance": "3", "is_syncing": True}},
            )
        assert request.url.path == "/eth/v1/node/peer_count"
        return httpx.Response(200, json={"data": {"connected": "9"}})

    async with transport(handler) as http:
        result = await ETHEREUM.probe(process("consensus", "lighthouse"), http)
    assert (result.status, result.height, result.network_height, result.peers) == (S, 7, 10, 9)


async def test_unreachable_or_erroring_endpoints_are_starting() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def error(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"code": 503, "message": "not ready"})

    for handler in (refuse, error):
        async with transport(handler) as http:
            for p in (process("execution", "geth"), process("consensus", "lighthouse")):
                result = await ETHEREUM.probe(p, http)
                assert result.status == ProcessStatus.STARTING
                assert result.message
