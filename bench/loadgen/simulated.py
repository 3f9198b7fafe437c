"""One simulated executor: a sync every few seconds and one held spec poll, over HTTP.

It sends what an agent sends (the agent's own GraphQL documents, its capabilities, its instance
header) and reports, for each node, exactly the revision its spec poll last returned, with the
process status the spec asks for (running or stopped), as an agent that applied it would.
"""

import asyncio
import time
import uuid
from typing import Any

import httpx
from tests.support.fleet import CAPABILITIES

from bench.loadgen.provision import SimulatedExecutorSpec
from bench.loadgen.stats import WorkerReport
from nodeplane.protocol import (
    INSTANCE_HEADER,
    ExecutorKind,
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


class SimulatedExecutor:
    """Plays one executor against the server through its own kept-alive HTTP client."""

    def __init__(
        self,
        spec: SimulatedExecutorSpec,
        http: httpx.AsyncClient,
        report: WorkerReport,
        *,
        sync_interval: float | None,
        poll_wait: float,
        request_timeout: float,
    ) -> None:
        self.spec = spec
        self._http = http
        self._report = report
        self._sync_interval = sync_interval
        self._poll_wait = poll_wait
        self._timeout = request_timeout
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

    def _observation(self, node_id: str) -> dict[str, object]:
        revision, running = self.known[node_id], self._running[node_id]
        key = (node_id, revision, running)
        cached = self._observations.get(key)
        if cached is None:
            status = ProcessStatus.RUNNING if running else ProcessStatus.STOPPED
            cached = NodeObservation(
                node_id=uuid.UUID(node_id),
                observed=ObservedNodeState(
                    revision=revision, processes=[ObservedProcess(role="node", status=status)]
                ),
            ).to_wire()
            self._observations[key] = cached
        return cached

    async def sync_once(self) -> None:
        """One heartbeat with an observation of every node whose spec the poll returned."""
        reported = dict(self.known)
        body = {
            "query": SYNC_EXECUTOR,
            "variables": {
                "input": {**self._base, "nodes": [self._observation(n) for n in reported]}
            },
        }
        sent = time.monotonic()
        self.sync_in_flight = sent
        try:
            response = await self._http.post(
                "/graphql", json=body, headers=self._headers, timeout=self._timeout
            )
            elapsed = time.monotonic() - sent
            payload = _payload(response)
        except httpx.HTTPError as exc:
            self._report.errors[f"sync {type(exc).__name__}"] += 1
            return
        finally:
            self.sync_in_flight = None
        if isinstance(payload, str):
            self._report.errors[f"sync {payload}"] += 1
            return
        rejected = payload["syncExecutor"]["rejected"]
        for item in rejected:
            self._report.errors[f"sync rejected: {item['reason'][:40]}"] += 1
        refused = {item["nodeId"] for item in rejected}
        self._report.reported.update({n: r for n, r in reported.items() if n not in refused})
        self._report.syncs.append((sent, elapsed))

    async def sync_forever(self, first_at: float) -> None:
        """Sync at a fixed cadence from `first_at` (monotonic); a slow sync delays only itself."""
        assert self._sync_interval is not None
        due = first_at
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self.sync_once()
            due += self._sync_interval
            # Behind by more than a period (an overloaded server): skip, as an agent's timer
            # would, rather than fire a burst of catch-up syncs.
            while due < time.monotonic():
                due += self._sync_interval

    # ---- spec poll -----------------------------------------------------------------------

    async def poll_once(self, wait: float) -> None:
        """One spec poll (held up to `wait` s); records when each new revision arrived."""
        known = [{"nodeId": n, "revision": r, "deleted": False} for n, r in self.known.items()]
        body = {"query": POLL_SPECS, "variables": {"known": known, "wait": wait}}
        response = await self._http.post(
            "/graphql", json=body, headers=self._headers, timeout=wait + self._timeout
        )
        arrived = time.monotonic()
        payload = _payload(response)
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
            except (httpx.HTTPError, PollError) as exc:
                self._report.errors[
                    f"poll {exc if isinstance(exc, PollError) else type(exc).__name__}"
                ] += 1
                await asyncio.sleep(RETRY_DELAY)


class PollError(Exception):
    """The server answered a poll with an error (the message is its type)."""


def _payload(response: httpx.Response) -> dict[str, Any] | str:
    """The GraphQL data, or a short name of what went wrong."""
    try:
        body = response.json()
    except ValueError:
        return f"http {response.status_code} (not JSON)"
    if body.get("errors"):
        return f"graphql {body['errors'][0].get('extensions', {}).get('code', 'unknown')}"
    if response.status_code != 200:
        return f"http {response.status_code}"
    data: dict[str, Any] = body["data"]
    return data
