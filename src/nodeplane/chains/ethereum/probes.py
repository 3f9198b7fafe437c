"""Health and sync probes of Ethereum clients: EL JSON-RPC, CL beacon API, anvil."""

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import httpx

from nodeplane.chains.base import ProbeResult
from nodeplane.chains.binaries import reported_version
from nodeplane.chains.rpc import RpcError, RpcUnavailable, get_json, json_rpc
from nodeplane.protocol import ProcessStatus


def _quantity(value: Any) -> int | None:
    """A JSON-RPC hex quantity (`"0x1a"`) or a beacon-API decimal string as an int."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith("0x") else int(value)
        except ValueError:
            return None
    return None


def execution_status(syncing: Any, block_number: Any, peer_count: Any) -> ProbeResult:
    """Status from `eth_syncing`, `eth_blockNumber` and `net_peerCount` (pure).

    A client that is not syncing but still sits at block 0 has not begun (it waits for its
    consensus client or for peers): that is syncing, not running.
    """
    height = _quantity(block_number)
    peers = _quantity(peer_count)
    if isinstance(syncing, Mapping):
        current = _quantity(syncing.get("currentBlock"))
        highest = _quantity(syncing.get("highestBlock"))
        current = height if current is None else current
        progress = current / highest if current is not None and highest else 0.0
        return ProbeResult(
            status=ProcessStatus.SYNCING,
            height=current,
            network_height=highest,
            peers=peers,
            sync_progress=min(max(progress, 0.0), 1.0),
        )
    if not height:
        return ProbeResult(
            status=ProcessStatus.SYNCING,
            height=height,
            peers=peers,
            sync_progress=0.0,
            message="waiting for the consensus client or peers",
        )
    return ProbeResult(
        status=ProcessStatus.RUNNING,
        height=height,
        network_height=height,
        peers=peers,
        sync_progress=1.0,
    )


def consensus_status(syncing: Mapping[str, Any], peer_count: Mapping[str, Any]) -> ProbeResult:
    """Status from `/eth/v1/node/syncing` and `/eth/v1/node/peer_count` `data` objects (pure).

    Heights are slots. An optimistic head (the EL is still syncing) or an offline EL counts
    as syncing: the node cannot yet serve a verified chain.
    """
    head = _quantity(syncing.get("head_slot"))
    distance = _quantity(syncing.get("sync_distance")) or 0
    peers = _quantity(peer_count.get("connected"))
    network_height = head + distance if head is not None else None
    message = None
    if syncing.get("el_offline") is True:
        message = "execution client offline"
    elif syncing.get("is_optimistic") is True:
        message = "optimistic: execution client still syncing"
    behind = syncing.get("is_syncing") is True or message is not None
    progress = head / network_height if head is not None and network_height else 0.0
    return ProbeResult(
        status=ProcessStatus.SYNCING if behind else ProcessStatus.RUNNING,
        height=head,
        network_height=network_height,
        peers=peers,
        sync_progress=min(max(progress, 0.0), 1.0) if behind else 1.0,
        message=message,
    )


async def probe_execution(http: httpx.AsyncClient, url: str) -> ProbeResult:
    """Probe an execution client's JSON-RPC."""
    try:
        syncing = await json_rpc(http, url, "eth_syncing")
        block_number = await json_rpc(http, url, "eth_blockNumber")
        peer_count = await json_rpc(http, url, "net_peerCount")
    except (RpcError, RpcUnavailable) as exc:
        return ProbeResult(status=ProcessStatus.STARTING, message=str(exc))
    return await with_client_version(http, url, execution_status(syncing, block_number, peer_count))


async def with_client_version(
    http: httpx.AsyncClient, url: str, result: ProbeResult
) -> ProbeResult:
    """`result` with the version the client says it runs (`web3_clientVersion`: "anvil/v1.5.1",
    "Geth/v1.14.12-stable-…/linux-amd64/go1.22"), or as it is if it says none."""
    try:
        answer = await json_rpc(http, url, "web3_clientVersion")
    except (RpcError, RpcUnavailable):
        return result  # an optional answer: the status stands without it
    version = reported_version(answer)
    return replace(result, client_version=version) if version else result


async def probe_consensus(http: httpx.AsyncClient, url: str) -> ProbeResult:
    """Probe a consensus client's standard beacon API."""
    base = url.rstrip("/")
    try:
        syncing = await get_json(http, f"{base}/eth/v1/node/syncing")
        peers = await get_json(http, f"{base}/eth/v1/node/peer_count")
    except RpcUnavailable as exc:
        return ProbeResult(status=ProcessStatus.STARTING, message=str(exc))
    sync_data = syncing.get("data") if isinstance(syncing, dict) else None
    peer_data = peers.get("data") if isinstance(peers, dict) else None
    if not isinstance(sync_data, dict) or not isinstance(peer_data, dict):
        return ProbeResult(status=ProcessStatus.STARTING, message="unexpected beacon API answer")
    return consensus_status(sync_data, peer_data)


async def probe_devnet(http: httpx.AsyncClient, url: str) -> ProbeResult:
    """A local dev chain is its own network: answering `eth_blockNumber` means running."""
    try:
        height = _quantity(await json_rpc(http, url, "eth_blockNumber"))
    except (RpcError, RpcUnavailable) as exc:
        return ProbeResult(status=ProcessStatus.STARTING, message=str(exc))
    running = ProbeResult(
        status=ProcessStatus.RUNNING,
        height=height,
        network_height=height,
        peers=0,
        sync_progress=1.0,
    )
    return await with_client_version(http, url, running)
