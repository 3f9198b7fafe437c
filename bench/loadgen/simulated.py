"""One simulated executor: a sync every few seconds and one held spec poll, over HTTP.

It sends what an agent sends (the agent's own GraphQL documents, its capabilities, its instance
header) and reports, for each node, exactly the revision its spec poll last returned, with the
process status the spec asks for (running or stopped), as an agent that applied it would. A
running node's process carries the numbers a probed one does (height, peers, CPU time, memory,
disk), and they move as a live node's do: an agent sends new values once per metrics interval
(Intervals.metrics, 30 s by default) and repeats its last observation in between, so one sync in
six of a simulated executor changes every node's observation, at a moment of its own.

It speaks HTTP through aiohttp rather than the agent's httpx: the bytes on the wire are the same
requests, but httpx spent about 1.3 ms of the load generator's CPU per request on this machine
against aiohttp's 0.25, and the load generator shares the machine's two cores with the server it
measures (the executors it stands for would each run on a host of their own).
"""

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from tests.support.fleet import CAPABILITIES

from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.stats import WorkerReport
from nodeplane.executor.controlplane_client import CONNECTION_LIMITS, retry_after_of
from nodeplane.protocol import (
    INSTANCE_HEADER,
    ExecutorKind,
    HostResources,
    NodeObservation,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    SyncExecutorRequest,
)
from nodeplane.protocol.executor_documents import POLL_SPECS, SYNC_EXECUTOR

# An agent waits this long after a failed poll before the next (it backs off further; a load
# generator should keep the pressure on).
RETRY_DELAY = 1.0
# Seconds an idle connection is kept: the agent's.
KEEPALIVE = CONNECTION_LIMITS.keepalive_expiry


class SimulatedExecutor:
    """Plays one executor against the server through its own kept-alive HTTP clients."""

    def __init__(
        self,
        spec: SimulatedExecutorSpec,
        http: "ExecutorClients",
        report: WorkerReport,
        *,
        sync_interval: float | None,
        poll_wait: float,
        request_timeout: float,
        metrics_interval: float | None = None,
        metrics_phase: float = 0.0,
    ) -> None:
        self.spec = spec
        self._http = http
        self._report = report
        self._sync_interval = sync_interval
        self._poll_wait = poll_wait
        self._timeout = request_timeout
        self._sync_timeout = aiohttp.ClientTimeout(total=request_timeout)
        # None: the numbers never move (every sync repeats the last). `metrics_phase` (seconds)
        # sets when in the interval this executor's values change, as agents started apart do.
        self._metrics_interval = metrics_interval
        self._metrics_phase = metrics_phase
        self._epoch = -1
        # Moves made by the caller on top of the interval's (bench/sync_cost.py: every sync).
        self.moves = 0
        self._headers = {
            "authorization": f"Bearer {spec.secret}",
            INSTANCE_HEADER: spec.instance_id,
        }
        # The heartbeat without observations, serialized once: only `nodes` changes per sync.
        self._base = SyncExecutorRequest(
            name=spec.name,
            kind=ExecutorKind.AGENT,
            version="0.1.0-loadgen",
            capabilities=CAPABILITIES,
            instance_id=uuid.UUID(spec.instance_id),
        ).to_wire()
        # node id -> revision the last spec poll returned, and whether that spec is running.
        self.known: dict[str, int] = {}
        self._running: dict[str, bool] = {}
        self._observations: dict[tuple[str, int, bool], dict[str, object]] = {}
        # When the sync in flight was sent (None when none is), so a stop can count it.
        self.sync_in_flight: float | None = None

    def assume_known(self, revision: int) -> None:
        """Hold every node at `revision` (running) before the first poll."""
        for node_id in self.spec.node_ids:
            self.known[node_id] = revision
            self._running[node_id] = True

    # ---- sync ----------------------------------------------------------------------------

    def _metrics_epoch(self) -> int:
        """How many times this executor's metric values have moved so far."""
        if self._metrics_interval is None:
            return self.moves
        return self.moves + int((time.monotonic() + self._metrics_phase) // self._metrics_interval)

    def _observation(self, node_id: str) -> dict[str, object]:
        revision, running = self.known[node_id], self._running[node_id]
        key = (node_id, revision, running)
        cached = self._observations.get(key)
        if cached is None:
            cached = NodeObservation(
                node_id=uuid.UUID(node_id),
                observed=ObservedNodeState(
                    revision=revision, processes=[_process(running, self._epoch)]
                ),
            ).to_wire()
            self._observations[key] = cached
        return cached

    def _refresh(self, epoch: int) -> None:
        """New metric values and host resources once per metrics epoch, as an agent sends."""
        if epoch == self._epoch:
            return
        self._observations.clear()
        self._epoch = epoch
        # Free disk shrinks as the chains grow; the agent reads it with the nodes' metrics.
        self._base["resources"] = HostResources(
            cpu_cores=16.0,
            memory_bytes=64 * 2**30,
            disk_total_bytes=4 * 2**40,
            disk_available_bytes=2**41 - 4096 * max(epoch, 0),
        ).to_wire()

    async def sync_once(self) -> float | None:
        """One heartbeat with an observation of every node whose spec the poll returned; the
        server's retry hint in seconds when it refused the sync as busy, as an agent reads it."""
        reported = dict(self.known)
        self._refresh(self._metrics_epoch())
        body = {
            "query": SYNC_EXECUTOR,
            "variables": {
                "input": {**self._base, "nodes": [self._observation(n) for n in reported]}
            },
        }
        sent = time.monotonic()
        self.sync_in_flight = sent
        try:
            async with self._http.syncs.post(
                "/graphql", json=body, headers=self._headers, timeout=self._sync_timeout
            ) as response:
                status, content = response.status, await response.read()
            elapsed = time.monotonic() - sent
            payload = _payload(status, content)
        except REQUEST_ERRORS as exc:
            self._report.error(f"sync {type(exc).__name__}", sent)
            return None
        finally:
            self.sync_in_flight = None
        if isinstance(payload, str):
            self._report.error(f"sync {payload}", sent)
            return busy_retry_after(content)
        rejected = payload["syncExecutor"]["rejected"]
        for item in rejected:
            self._report.error(f"sync rejected: {item['reason'][:40]}", sent)
        refused = {item["nodeId"] for item in rejected}
        self._report.reported.update({n: r for n, r in reported.items() if n not in refused})
        self._report.synced(sent, elapsed)
        return None

    async def sync_forever(self, first_at: float) -> None:
        """Sync at a fixed cadence from `first_at` (monotonic); a slow sync delays only itself."""
        assert self._sync_interval is not None
        due = first_at
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            hint = await self.sync_once()
            due += self._sync_interval
            if hint is not None:
                # Refused as busy: back no sooner than the hint, spread over twice its length,
                # as the agent's backoff does (runtime/reachability.py).
                due = max(due, time.monotonic() + hint * (1.0 + random.random()))
            # Behind by more than a period (an overloaded server): skip, as an agent's timer
            # would, rather than fire a burst of catch-up syncs.
            while due < time.monotonic():
                due += self._sync_interval

    # ---- spec poll -----------------------------------------------------------------------

    async def poll_once(self, wait: float) -> None:
        """One spec poll (held up to `wait` s); records when each new revision arrived."""
        known = [{"nodeId": n, "revision": r, "deleted": False} for n, r in self.known.items()]
        body = {"query": POLL_SPECS, "variables": {"known": known, "wait": wait}}
        async with self._http.polls.post(
            "/graphql",
            json=body,
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=wait + self._timeout),
        ) as response:
            status, content = response.status, await response.read()
        arrived = time.monotonic()
        payload = _payload(status, content)
        if isinstance(payload, str):
            raise PollError(payload)
        self._report.polls += 1
        for item in payload["executorSpecs"]:
            node_id, revision = item["nodeId"], item["revision"]
            self.known[node_id] = revision
            spec = item["spec"] or {}
            self._running[node_id] = spec.get("desiredState", "running") == "running"
            self._report.pickups.setdefault((node_id, revision), arrived)

    async def poll_forever(self, first_at: float) -> None:
        """Keep one spec poll held, re-issued the moment it returns."""
        await asyncio.sleep(max(0.0, first_at - time.monotonic()))
        while True:
            try:
                await self.poll_once(self._poll_wait)
            except POLL_ERRORS as exc:
                self._report.error(
                    f"poll {exc if isinstance(exc, PollError) else type(exc).__name__}",
                    time.monotonic(),
                )
                await asyncio.sleep(RETRY_DELAY)


def _process(running: bool, epoch: int) -> ObservedProcess:
    """A node's process as an agent observes it; a running one's numbers as of `epoch`."""
    if not running:
        return ObservedProcess(role="node", status=ProcessStatus.STOPPED)
    return ObservedProcess(
        role="node",
        status=ProcessStatus.RUNNING,
        pid=4242,
        height=2_500_000 + epoch,
        network_height=2_500_000 + epoch,
        peers=8 + epoch % 3,
        sync_progress=1.0,
        disk_total_bytes=2_000_000_000_000,
        disk_available_bytes=1_200_000_000_000 - epoch * 65_536,
        cpu_seconds=round(3_600.0 + epoch * 1.7, 2),
        memory_bytes=700_000_000 + (epoch % 5) * 4096,
        client_version="0.21.2.1",
    )


class PollError(Exception):
    """The server answered a poll with an error (the message is its type)."""


@dataclass(frozen=True)
class ExecutorClients:
    """One executor's HTTP clients: its syncs on one connection and its held poll on another,
    each kept alive for the next, as in an agent's pool.

    The agent's pool (httpcore) gives a request the first idle connection in the order they
    were opened, so once its polls have renewed a few times each poll keeps the connection it
    returned on and the syncs keep theirs. aiohttp gives the connection idle the longest: on one
    client, a poll's renewal would take the syncs' connection and the next sync the poll's, on
    every renewal. Behind several server processes that sends an executor's syncs to each in
    turn, which no agent does (each process keeps what it read of an executor's last sync).
    """

    syncs: aiohttp.ClientSession
    polls: aiohttp.ClientSession

    async def close(self) -> None:
        """Close both clients' connections."""
        await asyncio.gather(self.syncs.close(), self.polls.close())

    async def __aenter__(self) -> "ExecutorClients":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def executor_clients(base_url: str) -> ExecutorClients:
    """An executor's clients (`ExecutorClients`) for `base_url` (plain HTTP on loopback)."""
    return ExecutorClients(_client_session(base_url), _client_session(base_url))


def _client_session(base_url: str) -> aiohttp.ClientSession:
    # Idle connections are kept as long as the agent keeps them (its keep-alive expiry).
    connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE)
    return aiohttp.ClientSession(base_url, connector=connector)


# What a request can fail with: the connection's errors, and its timeout (TimeoutError).
REQUEST_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError)
# What a spec poll can fail with: those, and an answer that is not the poll's (`PollError`).
POLL_ERRORS: tuple[type[Exception], ...] = (*REQUEST_ERRORS, PollError)


def busy_retry_after(content: bytes) -> float | None:
    """The retryAfterSeconds of an `unavailable` answer, if the answer is one."""
    try:
        error = json.loads(content)["errors"][0]["extensions"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(error, dict) or error.get("code") != "unavailable":
        return None
    return retry_after_of(error)


def _payload(status: int, content: bytes) -> dict[str, Any] | str:
    """The GraphQL data, or a short name of what went wrong."""
    try:
        body = json.loads(content)
    except ValueError:
        return f"http {status} (not JSON)"
    if not isinstance(body, dict):
        return f"http {status} (not a JSON object)"
    if body.get("errors"):
        return f"graphql {body['errors'][0].get('extensions', {}).get('code', 'unknown')}"
    if status != 200:
        return f"http {status}"
    data: dict[str, Any] = body["data"]
    return data
