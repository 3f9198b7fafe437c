"""Probe decisions as tables (pure), plus the EL/CL probes over an in-process HTTP transport.

geth and lighthouse cannot be installed here; their probe glue is exercised against canned
answers shaped like the real APIs. litecoind and anvil are probed for real elsewhere.
"""

import asyncio
import base64
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeplane.chains.base import ProbeResult, ProcessPlan, RpcEndpoint
from nodeplane.chains.bitcoin_family import LITECOIN, chain_status
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
    answers = {
        "eth_syncing": False,
        "eth_blockNumber": "0x64",
        "net_peerCount": "0x3",
        "web3_clientVersion": "Geth/v1.14.12-stable/linux-amd64/go1.22",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["method"] not in answers:
            error = {"code": -32601, "message": "the method does not exist"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})
        return httpx.Response(
            200, json={"jsonrpc": "2.0", "id": body["id"], "result": answers[body["method"]]}
        )

    async with transport(handler) as http:
        result = await ETHEREUM.probe(process("execution", "geth"), http)
    assert (result.status, result.height, result.peers) == (R, 100, 3)
    assert result.client_version == "1.14.12"

    # A client that does not say its version is probed as before.
    del answers["web3_clientVersion"]
    async with transport(handler) as http:
        result = await ETHEREUM.probe(process("execution", "geth"), http)
    assert (result.status, result.height, result.client_version) == (R, 100, None)


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


class FakeBitcoind:
    """A loopback JSON-RPC endpoint shaped like bitcoind's: counts connections and requests."""

    def __init__(self, answer: Callable[[list[dict[str, Any]]], tuple[bytes, bytes]]) -> None:
        self.answer = answer  # batch -> (status line and headers, body)
        self.connections = 0
        self.requests: list[tuple[bytes, list[dict[str, Any]]]] = []
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        batch = json.loads(await reader.readexactly(length))
        self.requests.append((head, batch))
        status, body = self.answer(batch)
        writer.write(status + body)
        await writer.drain()
        writer.close()

    def plan(self, cookie: Path) -> ProcessPlan:
        return ProcessPlan(
            role="node",
            client="litecoind",
            version="1",
            argv=("/x",),
            working_dir=Path("/tmp"),
            rpc=RpcEndpoint(url=f"http://127.0.0.1:{self.port}/", cookie_file=cookie),
            network="regtest",
        )


def ok(results: dict[str, Any], framing: str = "length") -> Callable[..., tuple[bytes, bytes]]:
    def answer(batch: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        body = json.dumps(
            [
                {"result": results[c["method"]], "error": None, "id": c["id"]}
                for c in reversed(batch)
            ]
        ).encode()
        if framing == "chunked":
            half = len(body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:half], body[half:]))
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunks + b"0\r\n\r\n"
        if framing == "eof":
            return b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", body
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body

    return answer


async def probe_fake(fake: FakeBitcoind, tmp_path: Path) -> ProbeResult:
    cookie = tmp_path / ".cookie"
    cookie.write_text("__cookie__:secret")
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as http:
            return await LITECOIN.probe(fake.plan(cookie), http)
    finally:
        server.close()
        await server.wait_closed()


CHAIN = {"blocks": 7, "headers": 7, "initialblockdownload": False, "verificationprogress": 1.0}


@pytest.mark.parametrize("framing", ["length", "chunked", "eof"])
async def test_a_bitcoin_family_probe_is_one_batched_request_on_one_connection(
    tmp_path: Path, framing: str
) -> None:
    """Both calls in one JSON-RPC batch: the agent probes every node every report, and two
    requests (each on a connection of its own: keep-alive would delay the daemon's stops) were
    the biggest part of its CPU. Answers may come in any order, framed any way HTTP/1.1 allows."""
    network = {"subversion": "/LitecoinCore:0.21.2.1/"}
    fake = FakeBitcoind(
        ok(
            {"getblockchaininfo": CHAIN, "getpeerinfo": [peer(7)], "getnetworkinfo": network},
            framing,
        )
    )
    result = await probe_fake(fake, tmp_path)
    assert (result.status, result.height, result.peers) == (R, 7, 1)
    assert result.client_version == "0.21.2.1"
    assert fake.connections == 1 and len(fake.requests) == 1
    head, batch = fake.requests[0]
    assert [c["method"] for c in batch] == ["getblockchaininfo", "getpeerinfo", "getnetworkinfo"]
    assert b"Authorization: Basic " + base64.b64encode(b"__cookie__:secret") in head
    assert b"connection: close" in head.lower()


async def test_a_warming_up_node_is_starting_with_its_words(tmp_path: Path) -> None:
    def warming(batch: list[dict[str, Any]]) -> tuple[bytes, bytes]:
        error = {"code": -28, "message": "Loading block index..."}
        body = json.dumps([{"result": None, "error": error, "id": c["id"]} for c in batch]).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body), body

    result = await probe_fake(FakeBitcoind(warming), tmp_path)
    assert (result.status, result.message) == (ProcessStatus.STARTING, "Loading block index...")


@pytest.mark.parametrize(
    ("status_line", "body", "message"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", b"", "refused our credentials"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"<ht>", "not JSON"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", b"[]", "IncompleteReadError"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", b"", "not an HTTP response"),
    ],
)
async def test_a_bad_answer_is_starting_with_why(
    tmp_path: Path, status_line: bytes, body: bytes, message: str
) -> None:
    result = await probe_fake(FakeBitcoind(lambda batch: (status_line, body)), tmp_path)
    assert result.status == ProcessStatus.STARTING
    assert result.message is not None and message in result.message, result.message


async def test_an_endpoint_that_is_not_listening_is_starting(tmp_path: Path) -> None:
    cookie = tmp_path / ".cookie"
    cookie.write_text("u:p")
    fake = FakeBitcoind(ok({}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        fake.port = sock.getsockname()[1]  # bound, not listening: refused
        async with httpx.AsyncClient() as http:
            result = await LITECOIN.probe(fake.plan(cookie), http)
    assert result.status == ProcessStatus.STARTING
    assert result.message is not None and "ConnectionRefusedError" in result.message
