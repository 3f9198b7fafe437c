"""Assemble a running agent from its config: driver, adapters, binaries, runtime."""

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from nodeplane import __version__
from nodeplane.chains.base import ChainAdapter, ClientDef
from nodeplane.chains.binaries import BinaryNotFound, DownloadError, resolve_binary
from nodeplane.chains.installed import ADAPTERS, build_capabilities
from nodeplane.executor.agent.backend import AgentBackend
from nodeplane.executor.agent.config import AgentConfig
from nodeplane.executor.agent.drivers import detect_driver_kind, make_driver
from nodeplane.executor.agent.instance_lock import lock_data_dir
from nodeplane.executor.controlplane_client import ControlPlaneClient
from nodeplane.executor.runtime.backend import ApplyError
from nodeplane.executor.runtime.local_state import LocalState
from nodeplane.executor.runtime.metrics import serve_metrics
from nodeplane.executor.runtime.runtime import ExecutorRuntime, Intervals
from nodeplane.protocol import ExecutorCapabilities

log = structlog.get_logger(__name__)

# Installed client versions change rarely; re-detecting them costs a `--version` run per binary.
CAPABILITIES_TTL_SECONDS = 300.0


def state_path(data_dir: Path) -> Path:
    """Where the agent keeps the specs it holds."""
    return data_dir / "state" / "specs.json"


def _client_def(adapter: ChainAdapter, role: str, client: str) -> ClientDef | None:
    for network in adapter.networks:
        for role_def in adapter.roles(network):
            if role_def.role == role and (found := role_def.client(client)) is not None:
                return found
    return None


def binary_resolver(data_dir: Path) -> Callable[[ChainAdapter, str, str, str], Path]:
    """Resolve (adapter, role, client, version) to an executable, as ApplyError when it can't."""

    def resolve(adapter: ChainAdapter, role: str, client: str, version: str) -> Path:
        definition = _client_def(adapter, role, client)
        if definition is None:
            raise ApplyError(f"{adapter.chain} has no client {client!r} for role {role!r}")
        try:
            return resolve_binary(definition, version, data_dir)
        except (BinaryNotFound, DownloadError) as exc:
            raise ApplyError(str(exc)) from None

    return resolve


class CachedCapabilities:
    """Capabilities detected from the host, refreshed every few minutes."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._value: ExecutorCapabilities | None = None
        self._at = 0.0

    def refresh(self) -> ExecutorCapabilities:
        """Detect now (runs client binaries; call from a thread)."""
        self._value = build_capabilities(self._data_dir, adapters=ADAPTERS)
        self._at = time.monotonic()
        return self._value

    def __call__(self) -> ExecutorCapabilities:
        if self._value is None or time.monotonic() - self._at > CAPABILITIES_TTL_SECONDS:
            return self.refresh()
        return self._value


def build_runtime(
    config: AgentConfig,
    *,
    instance_id: uuid.UUID | None = None,
    previous_instance_ids: Sequence[uuid.UUID] = (),
) -> ExecutorRuntime:
    """The agent's runtime, wired from `config`, acting as agent process `instance_id`
    (a new one when not given) with its predecessors on the data directory."""
    instance_id = instance_id or uuid.uuid4()
    data_dir = config.agent.data_dir
    kind = detect_driver_kind(config.agent.driver)
    log.info("agent.driver", driver=kind, data_dir=str(data_dir))
    backend = AgentBackend(
        data_dir=data_dir,
        driver=make_driver(
            kind,
            data_dir=data_dir,
            unit_dir=config.agent.unit_dir,
            max_backoff_s=config.supervision.max_backoff,
        ),
        adapters=ADAPTERS,
        resolve_binary=binary_resolver(data_dir),
        capabilities=CachedCapabilities(data_dir),
        restart_delay_s=config.supervision.restart_delay,
        stable_after_s=config.supervision.stable_after,
        port_range=config.ports.port_range(),
    )
    return ExecutorRuntime(
        name=config.agent.name,
        version=__version__,
        client=ControlPlaneClient(
            config.control_plane.url, config.control_plane.key(), instance_id=instance_id
        ),
        backend=backend,
        state=LocalState(state_path(data_dir)),
        intervals=intervals_of(config),
        instance_id=instance_id,
        previous_instance_ids=previous_instance_ids,
    )


def intervals_of(config: AgentConfig) -> Intervals:
    """The runtime's cadences from the agent's [intervals] section."""
    return Intervals(
        heartbeat=config.intervals.heartbeat,
        reconcile=config.intervals.reconcile,
        housekeeping=config.intervals.supervise_every,
        report=config.intervals.report,
        metrics=config.intervals.metrics,
        poll_wait=config.intervals.poll_wait,
    )


async def run_agent(config: AgentConfig) -> None:
    """Run the agent until cancelled; DataDirLocked when another agent runs on its data dir."""
    with lock_data_dir(config.agent.data_dir, uuid.uuid4()) as lock:
        log.info(
            "agent.instance",
            instance_id=str(lock.instance_id),
            succeeds=[str(u) for u in lock.previous_instance_ids[:1]],
        )
        runtime = build_runtime(
            config,
            instance_id=lock.instance_id,
            previous_instance_ids=lock.previous_instance_ids,
        )
        metrics_server = None
        if (address := config.metrics.address()) is not None:
            metrics_server = serve_metrics(runtime.metrics, *address)
            log.info("agent.metrics", host=address[0], port=metrics_server.port)
        try:
            await runtime.run()
        finally:
            if metrics_server is not None:
                metrics_server.close()
            await runtime.client.aclose()
