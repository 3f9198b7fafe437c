"""Assemble a running operator: Kubernetes client, Lease, executor runtime and controller.

One process runs both loops of the operator, but only while it holds the Lease (leader.py): the
executor runtime with the operator backend (poll specs, apply BlockchainNodes, report) and the
inner controller (render children, write status). A replica that is not the leader only waits
for the Lease.
"""

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from lightkube import AsyncClient, KubeConfig

from nodeplane import __version__
from nodeplane.executor.controlplane_client import ControlPlaneClient
from nodeplane.executor.operator.backend import OperatorBackend
from nodeplane.executor.operator.controller import NodeController
from nodeplane.executor.operator.crd import FIELD_MANAGER
from nodeplane.executor.operator.images import OFFERED_VERSIONS, OPERATOR_IMAGE
from nodeplane.executor.operator.leader import LeaderElector, LeaseConfig
from nodeplane.executor.operator.render import ProbeSidecar
from nodeplane.executor.runtime.local_state import LocalState
from nodeplane.executor.runtime.runtime import ExecutorRuntime, Intervals

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class OperatorSettings:
    """Everything `nodeplane operator run` is told."""

    name: str
    control_plane_url: str
    api_key: str
    kubeconfig: Path | None = None  # None: in-cluster (service account), else ~/.kube/config
    namespace: str | None = None  # None: the service account's or kubeconfig context's namespace
    state_dir: Path = Path("/var/lib/nodeplane-operator")
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    intervals: Intervals = field(default_factory=Intervals)
    resync: float = 30.0
    # Client versions offered besides the defaults (client -> versions).
    extra_versions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The image of each node's probe sidecar (nodeplane's own).
    probe_image: str = OPERATOR_IMAGE


def kube_config(kubeconfig: Path | None) -> KubeConfig:
    """The given kubeconfig file, else the in-cluster service account, else ~/.kube/config."""
    if kubeconfig is not None:
        return KubeConfig.from_file(kubeconfig)
    return KubeConfig.from_env()


def config_namespace(config: KubeConfig) -> str:
    """The namespace a config names (the service account's in a pod), else `default`."""
    current = config.get()
    return (current.namespace if current is not None else None) or "default"


def offered_versions(extra: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """The default offered versions with `extra` added (newest given first)."""
    merged = {client: tuple(versions) for client, versions in OFFERED_VERSIONS.items()}
    for client, versions in extra.items():
        merged[client] = tuple(dict.fromkeys((*versions, *merged.get(client, ()))))
    return merged


def _instance_of(holder: str | None) -> list[uuid.UUID]:
    """The previous leader as a predecessor instance, when its identity is an instance id."""
    if not holder:
        return []
    try:
        return [uuid.UUID(holder)]
    except ValueError:
        return []


async def run_operator(settings: OperatorSettings) -> None:
    """Wait for the Lease, then run the runtime and the controller until cancelled or the Lease
    is lost (LeadershipLost, inside an ExceptionGroup)."""
    config = kube_config(settings.kubeconfig)
    namespace = settings.namespace or config_namespace(config)
    client = AsyncClient(config=config, namespace=namespace, field_manager=FIELD_MANAGER)
    instance_id = uuid.uuid4()
    elector = LeaderElector(client, namespace, str(instance_id), settings.lease)
    control_plane: ControlPlaneClient | None = None
    log.info(
        "operator.starting", name=settings.name, namespace=namespace, instance=str(instance_id)
    )
    try:
        previous = await elector.acquire()
        backend = OperatorBackend(
            client, namespace, versions=offered_versions(settings.extra_versions)
        )
        # Capabilities and resources are read before the first heartbeat carries them.
        await backend.refresh_cluster_info()
        control_plane = ControlPlaneClient(
            settings.control_plane_url, settings.api_key, instance_id=instance_id
        )
        runtime = ExecutorRuntime(
            name=settings.name,
            version=__version__,
            client=control_plane,
            backend=backend,
            state=LocalState(settings.state_dir / "specs.json"),
            intervals=settings.intervals,
            instance_id=instance_id,
            previous_instance_ids=_instance_of(previous),
        )
        controller = NodeController(
            client,
            namespace,
            resync=settings.resync,
            sidecar=ProbeSidecar(image=settings.probe_image),
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(elector.hold(), name="lease")
            group.create_task(controller.run(), name="controller")
            group.create_task(runtime.run(), name="runtime")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(elector.release())
        if control_plane is not None:
            await control_plane.aclose()
        await client.close()
