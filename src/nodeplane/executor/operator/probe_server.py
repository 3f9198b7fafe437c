"""The probe sidecar (`nodeplane operator probe`): asks each role of its pod over loopback, and
serves what it saw, read-only.

A loop probes every role with the chain adapter's own `probe` (the code the agent runs on the
host) every `interval` seconds and keeps the latest report; the HTTP endpoints answer from it at
once, so the controller's short timeout and the kubelet's readiness probe never wait on a slow
RPC:

- `GET /status`: `{"chain", "probedAt", "roles": {role: {status, message, height,
  network_height, peers, sync_progress}}}` (probe.report_entry);
- `GET /ready` (or `/ready/<role>`, a container's readiness probe): 200 when every role (or
  that role) answers RPC (running or syncing), else 503; also 503 while the report is stale
  (the loop is stuck).

Nothing secret is served: the cookie stays in the sidecar, only statuses and numbers leave it.
"""

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nodeplane.chains.base import ChainAdapter, ProbeResult
from nodeplane.executor.operator.probe import ProbePlan, all_ready, report_entry
from nodeplane.protocol.enums import ProcessStatus

log = structlog.get_logger(__name__)

DEFAULT_INTERVAL_S = 5.0
# A report older than this many intervals means the loop is stuck: not ready.
STALE_INTERVALS = 3


class Prober:
    """Probes a plan's processes and keeps the latest report."""

    def __init__(self, plan: ProbePlan, adapter: ChainAdapter, interval: float) -> None:
        self.plan = plan
        self.adapter = adapter
        self.interval = interval
        self.report: dict[str, dict[str, Any]] = {}
        self.probed_at: datetime | None = None
        self._probed_monotonic: float | None = None

    async def probe_once(self, http: httpx.AsyncClient) -> None:
        """Probe every role once (concurrently) and replace the report."""

        async def one(process: Any) -> ProbeResult:
            try:
                result: ProbeResult = await self.adapter.probe(process, http)
            except Exception as exc:  # an adapter bug must not end the sidecar
                log.warning("probe.failed", role=process.role, error=str(exc))
                return ProbeResult(status=ProcessStatus.STARTING, message=f"probe failed: {exc}")
            return result

        results = await asyncio.gather(*(one(p) for p in self.plan.processes))
        self.report = {
            p.role: report_entry(r) for p, r in zip(self.plan.processes, results, strict=True)
        }
        self.probed_at = datetime.now(UTC)
        self._probed_monotonic = time.monotonic()

    async def run(self) -> None:
        """Probe every `interval` seconds until cancelled."""
        # No proxy from the environment: the RPC is on loopback, in this pod.
        async with httpx.AsyncClient(trust_env=False) as http:
            while True:
                await self.probe_once(http)
                await asyncio.sleep(self.interval)

    def fresh(self) -> bool:
        """Whether the report is recent enough to be believed."""
        return (
            self._probed_monotonic is not None
            and time.monotonic() - self._probed_monotonic < self.interval * STALE_INTERVALS + 5
        )

    def status_body(self) -> dict[str, Any]:
        """The body of `GET /status`."""
        return {
            "chain": self.plan.chain,
            "probedAt": self.probed_at.isoformat() if self.probed_at else None,
            "fresh": self.fresh(),
            "roles": self.report,
        }


def probe_app(prober: Prober) -> Starlette:
    """The sidecar's read-only HTTP API."""

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(prober.status_body())

    async def ready(request: Request) -> JSONResponse:
        role = request.path_params.get("role")
        ok = prober.fresh() and all_ready(prober.report, role)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    return Starlette(
        routes=[
            Route("/status", status, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/ready/{role}", ready, methods=["GET"]),
        ]
    )


async def serve_probe(
    plan: ProbePlan, adapter: ChainAdapter, host: str, port: int, interval: float
) -> None:
    """Run the probe loop and the HTTP server until cancelled (SIGTERM ends both)."""
    prober = Prober(plan, adapter, interval)
    config = uvicorn.Config(
        probe_app(prober),
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    log.info("probe.starting", chain=plan.chain, roles=[p.role for p in plan.processes], port=port)
    loop_task = asyncio.create_task(prober.run(), name="probe-loop")
    try:
        await server.serve()
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
