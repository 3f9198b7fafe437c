"""The operator backend of the executor runtime: one BlockchainNode per assigned node.

The runtime's outer loop (poll, reconcile, report) calls this backend like the agent's; where the
agent starts units, this backend writes the node's BlockchainNode by server-side apply (field
manager `nodeplane-operator`) and leaves the rest to the inner controller (controller.py), which
renders the children and writes `.status`. So:

- `apply` applies the BlockchainNode (its spec carries the revision and the restart generation),
  then waits for the controller to have rendered that generation: the revision counts as applied
  only then, and a spec the controller cannot render is the revision's ApplyError;
- `observe` maps `.status.containers` to the node's processes (and a container's restart or
  failure seen since the last look to a runtime event);
- `teardown` deletes the BlockchainNode (marking it first when the data is to be dropped) and
  returns only once it is gone, that is once the controller's finalizer has removed the children
  (and the PVCs, when asked) and released it;
- `capabilities` are the chain adapters with the client versions that have images, plus the
  cluster's storage classes; `resources` the nodes' allocatable CPU and memory. Both are read
  from the cluster by `housekeeping`, since the runtime asks for them synchronously.
"""

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Node, PersistentVolumeClaim
from lightkube.resources.storage_v1 import StorageClass
from lightkube.types import PatchType

from nodeplane.chains.base import ChainAdapter, NodeConfigError
from nodeplane.chains.installed import ADAPTERS
from nodeplane.executor.operator.crd import FIELD_MANAGER, GROUP, NODE_LABEL
from nodeplane.executor.operator.drift import needs_apply, stamped
from nodeplane.executor.operator.images import DEFAULT_IMAGES, OFFERED_VERSIONS, ClientImage
from nodeplane.executor.operator.render import Owner, render_node
from nodeplane.executor.operator.resource import (
    BlockchainNode,
    NodeResource,
    ResourceSpecError,
    blockchain_node_body,
)
from nodeplane.executor.operator.status import CONDITION_RENDERED
from nodeplane.executor.runtime.backend import ApplyError, LogsUnavailable
from nodeplane.protocol import (
    AssignedNodeSpec,
    EventLevel,
    ExecutorCapabilities,
    ExecutorKind,
    HostResources,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
    RuntimeEventType,
)
from nodeplane.protocol.executor_api import MAX_EVENT_MESSAGE_LENGTH
from nodeplane.protocol.observed import MAX_MESSAGE_LENGTH
from nodeplane.protocol.quantities import quantity_value
from nodeplane.protocol.spec import IDENTIFIER_PATTERN
from nodeplane.protocol.text import storable_excerpt

log = structlog.get_logger(__name__)

# Set on a BlockchainNode before it is deleted when the node's data is to go too; the
# controller's finalizer then deletes the node's PVCs.
DROP_DATA_ANNOTATION = f"{GROUP}/drop-data"
# The storage classes and nodes of a cluster change rarely: read them at most this often.
CLUSTER_INFO_TTL_SECONDS = 60.0


async def list_objects(
    client: AsyncClient,
    kind: Any,
    namespace: str | None = None,
    labels: dict[str, Any] | None = None,
) -> list[Any]:
    """Every object of `kind` (in `namespace`, with `labels`), as a list."""
    kwargs: dict[str, Any] = {"labels": labels}
    if namespace is not None:
        kwargs["namespace"] = namespace
    return [obj async for obj in client.list(kind, **kwargs)]


def is_missing(exc: ApiError) -> bool:
    """Whether an API error says the object does not exist."""
    return exc.status.code == 404


def is_refusal(exc: ApiError) -> bool:
    """Whether the API server refused the object itself (not a passing failure): invalid (422),
    malformed (400), or a value of the wrong type, which a 1.20 server answers with a 500."""
    code = exc.status.code
    return code in (400, 422) or (
        code == 500 and "failed to create typed patch object" in (exc.status.message or "")
    )


def _node_resource(node: AssignedNodeSpec) -> NodeResource:
    if node.spec is None:
        raise ApplyError(f"node {node.name} has no spec to apply")
    return NodeResource(node.node_id, node.name, node.revision, node.spec)


def _status_of(obj: Any) -> dict[str, Any]:
    status = getattr(obj, "status", None)
    return status if isinstance(status, dict) else {}


def rendered_generation(obj: Any) -> tuple[bool, str | None]:
    """(whether the controller has handled the object's current generation, its render error)."""
    status = _status_of(obj)
    generation = obj.metadata.generation or 0
    if int(status.get("observedGeneration") or 0) < generation:
        return False, None
    for condition in status.get("conditions") or []:
        if condition.get("type") == CONDITION_RENDERED and condition.get("status") == "False":
            return True, str(condition.get("message") or condition.get("reason") or "not rendered")
    return True, None


def _optional_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def observed_processes(obj: Any) -> list[ObservedProcess]:
    """The node's processes as `.status.containers` describes them."""
    processes = []
    for entry in _status_of(obj).get("containers") or []:
        reason, message = entry.get("reason"), entry.get("message")
        text = message or reason
        progress = entry.get("syncProgress")
        processes.append(
            ObservedProcess(
                role=entry["role"],
                status=ProcessStatus(entry["status"]),
                message=storable_excerpt(text, MAX_MESSAGE_LENGTH) if text else None,
                # From the probe sidecar (the CRD's schema bounds them as the wire does).
                height=_optional_int(entry.get("height")),
                network_height=_optional_int(entry.get("networkHeight")),
                peers=_optional_int(entry.get("peers")),
                sync_progress=float(progress) if progress is not None else None,
            )
        )
    return processes


class OperatorBackend:
    """Runs nodes as BlockchainNodes in one namespace of a Kubernetes cluster."""

    kind = ExecutorKind.OPERATOR

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        *,
        adapters: Sequence[ChainAdapter] = ADAPTERS,
        images: Mapping[str, ClientImage] = DEFAULT_IMAGES,
        versions: Mapping[str, Sequence[str]] = OFFERED_VERSIONS,
        apply_wait: float = 10.0,
        teardown_wait: float = 60.0,
        poll_interval: float = 0.2,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.adapters = {a.chain: a for a in adapters}
        self.images = images
        self.versions = versions
        self.apply_wait = apply_wait
        self.teardown_wait = teardown_wait
        self.poll_interval = poll_interval
        self._storage_classes: list[str] = []
        self._resources = HostResources(cpu_cores=0.0, memory_bytes=0)
        self._cluster_info_at: float | None = None
        self._cluster_info_errors: dict[str, str] = {}
        self._events: list[RuntimeEvent] = []
        self._restarts_seen: dict[tuple[UUID, str], int] = {}
        self._failing: dict[tuple[UUID, str], bool] = {}

    # ---- what the executor offers -----------------------------------------------------------

    def capabilities(self) -> ExecutorCapabilities:
        """The chains with the client versions that have images, and the storage classes."""
        chains = []
        for adapter in self.adapters.values():
            # A client is offered only in the versions named for it, and only if it has an image.
            offered = {
                client: tuple(versions)
                for client, versions in self.versions.items()
                if client in self.images
            }
            chains.append(adapter.capability(offered))
        return ExecutorCapabilities(chains=chains, storage_classes=list(self._storage_classes))

    def resources(self) -> HostResources:
        """The cluster nodes' allocatable CPU and memory (zeros when nodes cannot be listed)."""
        return self._resources

    async def housekeeping(self) -> None:
        """Read the storage classes and nodes again when the last reading is old."""
        now = time.monotonic()
        if self._cluster_info_at is not None and now - self._cluster_info_at < (
            CLUSTER_INFO_TTL_SECONDS
        ):
            return
        await self.refresh_cluster_info()

    async def refresh_cluster_info(self) -> None:
        """Read the cluster's storage classes and nodes now; what cannot be read stays empty."""
        self._cluster_info_at = time.monotonic()
        try:
            names: list[str] = [
                sc.metadata.name for sc in await list_objects(self.client, StorageClass)
            ]
        except ApiError as exc:
            self._cluster_info_failed("storageclasses", exc)
        else:
            # A class whose name the wire cannot carry (dots, over 32 characters) is not offered.
            self._storage_classes = sorted(n for n in names if re.fullmatch(IDENTIFIER_PATTERN, n))
        try:
            cpu, memory = 0.0, 0
            for node in await list_objects(self.client, Node):
                allocatable = (node.status.allocatable if node.status else None) or {}
                if "cpu" in allocatable:
                    cpu += float(quantity_value(allocatable["cpu"]))
                if "memory" in allocatable:
                    memory += int(quantity_value(allocatable["memory"]))
            # Cluster sizes stay far below the wire's bounds; rounding keeps the float tidy.
            cpu = round(cpu, 3)
        except ApiError as exc:
            self._cluster_info_failed("nodes", exc)
        else:
            self._resources = HostResources(cpu_cores=cpu, memory_bytes=memory)

    def _cluster_info_failed(self, what: str, exc: ApiError) -> None:
        message = f"{exc.status.code}: {exc.status.message}"
        if self._cluster_info_errors.get(what) != message:
            self._cluster_info_errors[what] = message
            log.warning("operator.cluster_info_unreadable", what=what, error=message)

    def log_file(self, node: AssignedNodeSpec, role: str) -> Path:
        """Never: a Pod's log is the kubelet's to serve, and this operator does not read it."""
        raise LogsUnavailable(
            "logs are not available for operator executors; read the Pod's log with kubectl"
        )

    def drain_events(self) -> list[RuntimeEvent]:
        """Container restarts and failures seen since the last call."""
        events, self._events = self._events, []
        return events

    # ---- apply ------------------------------------------------------------------------------

    def _check_renders(self, resource: NodeResource) -> None:
        """Refuse at once a spec the controller could not render (same renderer, no I/O)."""
        adapter = self.adapters.get(resource.spec.chain)
        if adapter is None:
            raise ApplyError(f"this operator has no adapter for chain {resource.spec.chain!r}")
        try:
            render_node(resource, adapter, Owner(resource.name, "-"), self.namespace, self.images)
        except NodeConfigError as exc:
            raise ApplyError(str(exc)) from None

    async def _get(self, name: str) -> Any | None:
        try:
            return await self.client.get(BlockchainNode, name, namespace=self.namespace)
        except ApiError as exc:
            if is_missing(exc):
                return None
            raise

    @staticmethod
    def _owned_by(obj: Any, node: AssignedNodeSpec) -> bool:
        spec = obj.spec if isinstance(obj.spec, dict) else {}
        return str(spec.get("nodeId")) == str(node.node_id)

    async def apply(self, node: AssignedNodeSpec) -> None:
        """Apply the node's BlockchainNode and wait for the controller to render it."""
        resource = _node_resource(node)
        self._check_renders(resource)
        existing = await self._get(node.name)
        if existing is not None:
            if not self._owned_by(existing, node):
                raise ApplyError(
                    f"BlockchainNode {node.name} in namespace {self.namespace} belongs to "
                    f"another node ({(existing.spec or {}).get('nodeId')})"
                )
            if existing.metadata.deletionTimestamp is not None:
                raise ApplyError(f"BlockchainNode {node.name} is still being deleted")
        try:
            body = stamped(blockchain_node_body(resource, self.namespace))
        except ResourceSpecError as exc:
            raise ApplyError(str(exc)) from None
        # Applied only when it differs (drift.py): this runs on every resync, and on 1.20 even
        # an unchanged apply would bump the object and wake the controller.
        applied = existing
        if existing is None or needs_apply(existing.to_dict(), body):
            try:
                applied = await self.client.apply(
                    BlockchainNode.from_dict(body), field_manager=FIELD_MANAGER, force=True
                )
            except ApiError as exc:
                if is_refusal(exc):
                    raise ApplyError(f"the API server refused the BlockchainNode: {exc}") from None
                raise
        await self._wait_rendered(node.name, applied)

    async def _wait_rendered(self, name: str, applied: Any) -> None:
        generation = applied.metadata.generation
        deadline = time.monotonic() + self.apply_wait
        current = applied
        while True:
            handled, error = rendered_generation(current)
            if handled:
                if error is not None:
                    raise ApplyError(error)
                return
            if time.monotonic() >= deadline:
                raise ApplyError(
                    f"the operator's controller has not rendered BlockchainNode {name} "
                    f"(generation {generation}) yet"
                )
            await asyncio.sleep(self.poll_interval)
            current = await self._get(name)
            if current is None:
                raise ApplyError(f"BlockchainNode {name} disappeared while being applied")

    # ---- observe ----------------------------------------------------------------------------

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        """The node's containers as the controller last described them; a container restarted
        or newly failing since the last look is also a runtime event."""
        obj = await self._get(node.name)
        if obj is None or not self._owned_by(obj, node):
            return []
        self._note_restarts(node, _status_of(obj).get("containers") or [])
        return observed_processes(obj)

    def _note_restarts(self, node: AssignedNodeSpec, containers: list[dict[str, Any]]) -> None:
        for entry in containers:
            role = str(entry.get("role"))
            key = (node.node_id, role)
            restarts = int(entry.get("restartCount") or 0)
            failing = entry.get("status") == ProcessStatus.ERROR.value
            seen = self._restarts_seen.get(key)
            was_failing = self._failing.get(key, False)
            self._restarts_seen[key], self._failing[key] = restarts, failing
            why = entry.get("message") or entry.get("reason") or "unknown"
            payload = {"role": role, "restarts": restarts, "reason": entry.get("reason")}
            if seen is not None and restarts > seen:
                self._events.append(
                    RuntimeEvent(
                        node_id=node.node_id,
                        type=RuntimeEventType.NODE_PROCESS_RESTARTED,
                        level=EventLevel.WARN,
                        message=storable_excerpt(
                            f"{node.name}: container {role} restarted ({restarts} restarts): {why}",
                            MAX_EVENT_MESSAGE_LENGTH,
                        ),
                        payload=payload,
                    )
                )
            elif failing and not was_failing:
                self._events.append(
                    RuntimeEvent(
                        node_id=node.node_id,
                        type=RuntimeEventType.NODE_PROCESS_CRASHED,
                        level=EventLevel.ERROR,
                        message=storable_excerpt(
                            f"{node.name}: container {role} failed: {why}",
                            MAX_EVENT_MESSAGE_LENGTH,
                        ),
                        payload=payload,
                    )
                )

    # ---- teardown ---------------------------------------------------------------------------

    async def teardown(self, node: AssignedNodeSpec) -> None:
        """Delete the node's BlockchainNode and wait until its finalizer let it go."""
        if not node.name:
            return  # gone from the control plane before it had a name here: nothing to remove
        drop_data = not node.retain_data
        obj = await self._get(node.name)
        if obj is not None and self._owned_by(obj, node):
            if drop_data and (obj.metadata.annotations or {}).get(DROP_DATA_ANNOTATION) != "true":
                await self.client.patch(
                    BlockchainNode,
                    node.name,
                    {"metadata": {"annotations": {DROP_DATA_ANNOTATION: "true"}}},
                    namespace=self.namespace,
                    patch_type=PatchType.MERGE,
                )
            if obj.metadata.deletionTimestamp is None:
                try:
                    await self.client.delete(BlockchainNode, node.name, namespace=self.namespace)
                except ApiError as exc:
                    if not is_missing(exc):
                        raise
            await self._wait_gone(node)
        if drop_data:
            # Normally done by the finalizer; here for a node whose BlockchainNode was deleted
            # without it (by hand, or before the controller added the finalizer).
            await self._delete_claims(node.name)

    async def _wait_gone(self, node: AssignedNodeSpec) -> None:
        deadline = time.monotonic() + self.teardown_wait
        while True:
            obj = await self._get(node.name)
            if obj is None or not self._owned_by(obj, node):
                return
            if time.monotonic() >= deadline:
                message = _status_of(obj).get("message") or "its finalizer is not released yet"
                raise ApplyError(f"BlockchainNode {node.name} is still being deleted: {message}")
            await asyncio.sleep(self.poll_interval)

    async def _delete_claims(self, name: str) -> None:
        labels = {NODE_LABEL: name}
        for claim in await list_objects(self.client, PersistentVolumeClaim, self.namespace, labels):
            if claim.metadata.deletionTimestamp is not None:
                continue
            try:
                await self.client.delete(
                    PersistentVolumeClaim, claim.metadata.name, namespace=self.namespace
                )
            except ApiError as exc:
                if not is_missing(exc):
                    raise
