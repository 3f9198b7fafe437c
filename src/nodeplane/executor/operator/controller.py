"""The inner controller: BlockchainNodes in, ConfigMap, StatefulSet, Services and `.status` out.

Level-triggered, in the shape of controller-runtime: watches (BlockchainNodes, and the
StatefulSets, ConfigMaps, Services and Pods labelled `nodeplane.dev/node`) only put the name of
the node concerned into a work queue (executor/runtime/workqueue.py); a worker reconciles a node
from what the API server says *now*, so a lost event, a restart of the operator or a child edited
or deleted by hand all heal the same way. A failure is retried with per-node exponential
backoff, and every node is queued again on a periodic resync.

Reconcile of one node:
- it is being deleted: delete its children, wait until they (and its pods) are gone, delete its
  PVCs too when the delete asked to drop data, then release the finalizer `nodeplane.dev/teardown`;
- else: make sure the finalizer is on it, render (render.py) and server-side apply every child
  that differs from its rendering (drift.py: an unchanged child is never written), delete a
  public ports' Service the node no longer asks for (it has no public port any more, or the
  UDP ports' Service of a LoadBalancer node that changed type), and write `.status` from the
  StatefulSet and Pod (status.py), with what the pod's probe sidecar reports (height, peers,
  syncing or running), when it changed.

A node whose pod runs is queued again every `probe_interval` seconds, so heights and sync
progress stay fresh between watch events; the sidecar is asked with a short timeout, and one that
does not answer (or that the kubelet says is not running: its own waiting reason is the message)
only leaves the kubelet's view with a message.

Each watch lists first, then watches from the list's resourceVersion; when the API server says
that version is gone (410: compacted), or the connection breaks, it lists again.
"""

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import structlog
from lightkube import ApiError, AsyncClient
from lightkube.codecs import from_dict
from lightkube.core.resource import NamespacedResource
from lightkube.operators import exists
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Service
from lightkube.types import PatchType

from nodeplane.chains.base import ChainAdapter, NodeConfigError, ProbeResult
from nodeplane.chains.installed import ADAPTERS
from nodeplane.executor.operator.backend import (
    DROP_DATA_ANNOTATION,
    is_missing,
    is_refusal,
    list_objects,
)
from nodeplane.executor.operator.crd import (
    FIELD_MANAGER,
    GROUP,
    KIND,
    NODE_LABEL,
    STATUS_FIELD_MANAGER,
    Phase,
)
from nodeplane.executor.operator.drift import needs_apply, stamped
from nodeplane.executor.operator.images import DEFAULT_IMAGES, ClientImage
from nodeplane.executor.operator.probe import report_of
from nodeplane.executor.operator.render import (
    PROBE_CONTAINER,
    Owner,
    ProbeSidecar,
    RenderedNode,
    child_name,
    public_service_name,
    public_udp_service_name,
    render_node,
)
from nodeplane.executor.operator.resource import (
    BlockchainNode,
    NodeResource,
    ResourceSpecError,
    node_resource_of,
)
from nodeplane.executor.operator.status import (
    container_states,
    container_up,
    node_phase,
    sidecar_down,
    status_body,
    with_probes,
)
from nodeplane.executor.runtime.reachability import JitteredBackoff
from nodeplane.executor.runtime.workqueue import ExponentialBackoff, QueueShutDown, WorkQueue
from nodeplane.protocol.enums import DesiredState

log = structlog.get_logger(__name__)

FINALIZER = f"{GROUP}/teardown"
CHILD_KINDS: tuple[type[NamespacedResource], ...] = (StatefulSet, ConfigMap, Service, Pod)
_APPLY_KINDS: dict[str, type[NamespacedResource]] = {
    "ConfigMap": ConfigMap,
    "Service": Service,
    "StatefulSet": StatefulSet,
}


class Requeue(Exception):
    """Not an error: the node waits for something (children going away) and is looked at again."""

    def __init__(self, why: str, after: float) -> None:
        super().__init__(why)
        self.after = after


def _as_dict(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    data: dict[str, Any] = obj.to_dict()
    return data


def _gone(exc: httpx.HTTPStatusError) -> bool:
    """Whether a watch failed because its resourceVersion is no longer available (410)."""
    if isinstance(exc, ApiError):  # an ERROR event in the stream has no response of its own
        return exc.status.code == 410
    return exc.response is not None and exc.response.status_code == 410


class NodeController:
    """Keeps every BlockchainNode of one namespace rendered, and its status written."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        *,
        adapters: Sequence[ChainAdapter] = ADAPTERS,
        images: Mapping[str, ClientImage] = DEFAULT_IMAGES,
        workers: int = 4,
        resync: float = 30.0,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
        teardown_poll: float = 0.5,
        watch_timeout: int = 300,
        sidecar: ProbeSidecar = ProbeSidecar(),
        probe_interval: float = 10.0,
        probe_timeout: float = 2.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.adapters = {a.chain: a for a in adapters}
        self.images = images
        self.sidecar = sidecar
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        # Open while `run` runs (a reconcile called on its own opens one for the call).
        self._http: httpx.AsyncClient | None = None
        # Nodes whose pod ran at their last reconcile: refreshed every probe_interval.
        self._probed: set[str] = set()
        self.workers = workers
        self.resync = resync
        self.teardown_poll = teardown_poll
        self.watch_timeout = watch_timeout
        self.queue: WorkQueue[str] = WorkQueue(ExponentialBackoff(base=retry_base, cap=retry_cap))
        self._errors: dict[str, str] = {}
        # How often each watch listed (a first list, then one per expired version or break).
        self.lists: dict[str, int] = {}

    async def run(self) -> None:
        """Watch, resync and reconcile until cancelled."""
        log.info("controller.starting", namespace=self.namespace)
        try:
            async with self._probe_client() as self._http, asyncio.TaskGroup() as group:
                group.create_task(self.watch(BlockchainNode), name="watch-blockchainnodes")
                for kind in CHILD_KINDS:
                    group.create_task(self.watch(kind), name=f"watch-{kind.__name__}")
                group.create_task(self._resync_loop(), name="controller-resync")
                group.create_task(self._probe_loop(), name="controller-probe-refresh")
                for i in range(self.workers):
                    group.create_task(self._worker(), name=f"controller-worker-{i}")
        finally:
            self._http = None
            self.queue.shutdown()

    def _probe_client(self) -> httpx.AsyncClient:
        # Never a proxy from the environment: pod IPs are reached directly.
        return httpx.AsyncClient(timeout=self.probe_timeout, trust_env=False)

    # ---- watches ----------------------------------------------------------------------------

    def _key_of(self, kind: type[NamespacedResource], obj: Any) -> str | None:
        """The node an object belongs to: a BlockchainNode's own name, a child's label."""
        if kind is BlockchainNode:
            name: str | None = obj.metadata.name
            return name
        labels = obj.metadata.labels or {}
        owner: str | None = labels.get(NODE_LABEL)
        return owner

    async def watch(
        self, kind: type[NamespacedResource], *, resource_version: str | None = None
    ) -> None:
        """List `kind`, queue what it lists, then watch from the list's version; list again
        when the version is gone (410) or the watch breaks. `resource_version` starts with a
        watch from that version instead of a list (for tests of the 410 path)."""
        labels: dict[str, Any] | None = None if kind is BlockchainNode else {NODE_LABEL: exists()}
        backoff = JitteredBackoff(base=0.5, cap=10.0)
        name = kind.__name__
        version = resource_version
        while True:
            try:
                if version is None:
                    self.lists[name] = self.lists.get(name, 0) + 1
                    listing = self.client.list(kind, namespace=self.namespace, labels=labels)
                    async for obj in listing:
                        self._queue_for(kind, obj)
                    version = listing.resourceVersion
                async for _event, obj in self.client.watch(
                    kind,
                    namespace=self.namespace,
                    labels=labels,
                    resource_version=version,
                    server_timeout=self.watch_timeout,
                ):
                    self._queue_for(kind, obj)
                    backoff.reset()
            except httpx.HTTPStatusError as exc:  # ApiError included
                version = None
                if _gone(exc):
                    log.info("controller.watch_expired", kind=name)
                    # Compacted away: list again, at once the first time (then backing off, so
                    # a server that keeps answering 410 is not asked in a tight loop).
                    if backoff.attempt:
                        await asyncio.sleep(backoff.next_delay())
                    else:
                        backoff.attempt = 1
                    continue
                log.warning("controller.watch_failed", kind=name, error=str(exc))
                await asyncio.sleep(backoff.next_delay())
            except (httpx.HTTPError, OSError) as exc:
                version = None
                log.warning("controller.watch_failed", kind=name, error=str(exc))
                await asyncio.sleep(backoff.next_delay())

    def _queue_for(self, kind: type[NamespacedResource], obj: Any) -> None:
        key = self._key_of(kind, obj)
        if key:
            self.queue.add(key)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            try:
                for obj in await list_objects(self.client, BlockchainNode, self.namespace):
                    if self.queue.num_requeues(obj.metadata.name) == 0:
                        self.queue.add(obj.metadata.name)
            except (ApiError, httpx.HTTPError) as exc:
                log.warning("controller.resync_failed", error=str(exc))

    async def _probe_loop(self) -> None:
        """Queue every node whose pod runs, so its sidecar's report reaches `.status`."""
        while True:
            await asyncio.sleep(self.probe_interval)
            for name in sorted(self._probed):
                # A node in backoff keeps its backoff (as the resync does).
                if self.queue.num_requeues(name) == 0:
                    self.queue.add(name)

    async def read_probe(
        self, pod: dict[str, Any], roles: list[str]
    ) -> tuple[dict[str, ProbeResult] | None, str | None]:
        """(the sidecar's report of `roles`, or None and why) for a pod that runs."""
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            return None, "the pod has no IP yet"
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{self.sidecar.port}/status"
        try:
            if self._http is not None:
                response = await self._http.get(url)
            else:
                async with self._probe_client() as http:
                    response = await http.get(url)
            payload = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return None, f"no answer from {ip}:{self.sidecar.port} ({type(exc).__name__})"
        if response.status_code != 200:
            return None, f"HTTP {response.status_code} from {ip}:{self.sidecar.port}"
        if isinstance(payload, dict) and payload.get("fresh") is False:
            return None, "its report is stale"
        return report_of(payload, roles), None

    # ---- workers ----------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            try:
                name = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self.reconcile(name)
            except Requeue as wait:
                log.debug("controller.waiting", node=name, why=str(wait))
                self.queue.add_after(name, wait.after)
            except Exception as exc:  # one node's failure is retried, never the controller's end
                message = f"{type(exc).__name__}: {exc}"
                if self._errors.get(name) != message:
                    self._errors[name] = message
                    log.error("controller.reconcile_failed", node=name, error=message, exc_info=exc)
                self.queue.add_rate_limited(name)
            else:
                if self._errors.pop(name, None) is not None:
                    log.info("controller.reconcile_recovered", node=name)
                self.queue.forget(name)
            finally:
                self.queue.done(name)

    async def _get(self, kind: type[NamespacedResource], name: str) -> Any | None:
        try:
            return await self.client.get(kind, name, namespace=self.namespace)
        except ApiError as exc:
            if is_missing(exc):
                return None
            raise

    async def reconcile(self, name: str) -> None:
        """Converge one node from what the API server says now (raises Requeue to wait)."""
        bn = await self._get(BlockchainNode, name)
        if bn is None or bn.metadata.deletionTimestamp is not None:
            self._probed.discard(name)
        if bn is None:
            return
        if bn.metadata.deletionTimestamp is not None:
            await self._finalize(bn)
            return
        if FINALIZER not in (bn.metadata.finalizers or []):
            bn = await self._set_finalizers(bn, [*(bn.metadata.finalizers or []), FINALIZER])
        spec = bn.spec if isinstance(bn.spec, dict) else {}
        render_error: str | None = None
        render_reason = "RenderFailed"
        rendered: RenderedNode | None = None
        node: NodeResource | None = None
        try:
            node = node_resource_of(name, spec)
            adapter = self.adapters.get(node.spec.chain)
            if adapter is None:
                raise ResourceSpecError(f"this operator has no adapter for chain {node.spec.chain}")
            rendered = render_node(
                node,
                adapter,
                Owner(name, bn.metadata.uid),
                self.namespace,
                self.images,
                self.sidecar,
            )
        except ResourceSpecError as exc:
            render_error, render_reason = str(exc), "InvalidSpec"
        except NodeConfigError as exc:
            render_error = str(exc)
        if rendered is not None:
            render_error = await self._apply_children(rendered)
            if render_error is not None:
                render_reason = "ApplyFailed"
        await self._write_status(bn, node, rendered, render_error, render_reason)

    async def _apply_children(self, rendered: RenderedNode) -> str | None:
        """Server-side apply every child; the API server's refusal of one, as text."""
        for rendered_body in rendered.objects():
            body = stamped(rendered_body)
            kind, child = body["kind"], body["metadata"]["name"]
            # Applied only when it differs: on 1.20 even an unchanged apply bumps the object.
            live = _as_dict(await self._get(_APPLY_KINDS[kind], child))
            if not needs_apply(live, body):
                continue
            try:
                await self.client.apply(from_dict(body), field_manager=FIELD_MANAGER, force=True)
            except ApiError as exc:
                if is_refusal(exc):
                    return f"the API server refused {kind} {child}: {exc.status.message}"
                raise
        node = rendered.stateful_set["metadata"]["labels"][NODE_LABEL]
        # A Service of public ports the node no longer asks for: none at all (no public port any
        # more), or the UDP ports' one of a node that is no LoadBalancer (any more), or that has
        # no public UDP port.
        for service, name in (
            (rendered.public_service, public_service_name(node)),
            (rendered.public_udp_service, public_udp_service_name(node)),
        ):
            if service is None:
                await self._delete_child(Service, name, node)
        return None

    async def _delete_child(self, kind: type[NamespacedResource], name: str, node: str) -> None:
        """Delete the node's child `name` if it is there. Read first: a GET is what every
        reconcile costs anyway, where a DELETE of what is not there would be a write attempt
        each time; and an object of that name without the node's label is not the node's."""
        live = await self._get(kind, name)
        if live is None or live.metadata.deletionTimestamp is not None:
            return
        if (live.metadata.labels or {}).get(NODE_LABEL) != node:
            return
        await self._delete(kind, name)

    async def _delete(self, kind: type[NamespacedResource], name: str) -> None:
        try:
            await self.client.delete(kind, name, namespace=self.namespace)
        except ApiError as exc:
            if not is_missing(exc):
                raise

    async def _write_status(
        self,
        bn: Any,
        node: NodeResource | None,
        rendered: RenderedNode | None,
        render_error: str | None,
        render_reason: str,
    ) -> None:
        spec = bn.spec if isinstance(bn.spec, dict) else {}
        desired = DesiredState.STOPPED if spec.get("desiredState") == "stopped" else None
        desired = desired or DesiredState.RUNNING
        roles: list[str] = list((spec.get("clients") or {}).keys())
        stateful_set: dict[str, Any] | None = None
        pod: dict[str, Any] | None = None
        if rendered is not None and node is not None:
            desired = node.spec.desired_state
            template = rendered.stateful_set["spec"]["template"]["spec"]
            roles = [c["name"] for c in template["containers"] if c["name"] != PROBE_CONTAINER]
            sts_name = child_name(node.name)
            stateful_set = _as_dict(await self._get(StatefulSet, sts_name))
            pod = _as_dict(await self._get(Pod, f"{sts_name}-0"))
        containers = container_states(roles, desired, pod)
        if pod is not None and any(container_up(c) for c in containers):
            self._probed.add(bn.metadata.name)
            # A sidecar the kubelet says is not running cannot answer: say why (its image, its
            # crash loop) rather than "no answer", and spare the request and its timeout.
            report: dict[str, ProbeResult] | None = None
            unreachable = sidecar_down(pod, PROBE_CONTAINER)
            if unreachable is None:
                report, unreachable = await self.read_probe(pod, roles)
            containers = with_probes(containers, report, unreachable)
        else:
            self._probed.discard(bn.metadata.name)
        phase, message = node_phase(desired, containers, stateful_set, pod, render_error)
        previous = bn.status if isinstance(bn.status, dict) else {}
        revision = node.revision if node is not None else spec.get("revision")
        status = status_body(
            generation=bn.metadata.generation or 0,
            revision=int(revision) if revision is not None else None,
            phase=phase,
            message=message,
            containers=containers,
            render_error=render_error,
            render_reason=render_reason,
            previous=previous,
        )
        if status == previous:
            return
        if previous.get("phase") != phase:
            log.info("controller.phase", node=bn.metadata.name, phase=phase, message=message)
        body = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": KIND,
            "metadata": {"name": bn.metadata.name, "namespace": self.namespace},
            "status": status,
        }
        await self.client.apply(
            BlockchainNode.Status.from_dict(body), field_manager=STATUS_FIELD_MANAGER, force=True
        )

    async def _set_finalizers(self, bn: Any, finalizers: list[str]) -> Any:
        """Replace the finalizers, guarded by the resourceVersion read (a conflict retries)."""
        return await self.client.patch(
            BlockchainNode,
            bn.metadata.name,
            {
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": bn.metadata.resourceVersion,
                }
            },
            namespace=self.namespace,
            patch_type=PatchType.MERGE,
        )

    async def _finalize(self, bn: Any) -> None:
        """Tear a deleted node down: children, pods, PVCs when asked; then let it go."""
        name = bn.metadata.name
        if FINALIZER not in (bn.metadata.finalizers or []):
            return  # not ours (any more): the garbage collector does the rest
        labels = {NODE_LABEL: name}
        remaining: list[str] = []
        for kind in (StatefulSet, Service, ConfigMap):
            for obj in await list_objects(self.client, kind, self.namespace, labels):
                remaining.append(f"{kind.__name__} {obj.metadata.name}")
                if obj.metadata.deletionTimestamp is None:
                    await self._delete(kind, obj.metadata.name)
        for pod in await list_objects(self.client, Pod, self.namespace, labels):
            remaining.append(f"Pod {pod.metadata.name}")
        drop_data = (bn.metadata.annotations or {}).get(DROP_DATA_ANNOTATION) == "true"
        if drop_data and not remaining:
            # Only once no pod uses them: a claim in use is kept by its protection finalizer.
            for claim in await list_objects(
                self.client, PersistentVolumeClaim, self.namespace, labels
            ):
                remaining.append(f"PersistentVolumeClaim {claim.metadata.name}")
                if claim.metadata.deletionTimestamp is None:
                    await self._delete(PersistentVolumeClaim, claim.metadata.name)
        if remaining:
            await self._note_teardown(bn, remaining)
            raise Requeue(f"waiting for {', '.join(remaining)} to go", self.teardown_poll)
        rest = [f for f in bn.metadata.finalizers or [] if f != FINALIZER]
        try:
            await self._set_finalizers(bn, rest)
        except ApiError as exc:
            if is_missing(exc):
                return
            raise  # a conflict (someone wrote the node meanwhile): retried on a fresh read
        log.info("controller.teardown_done", node=name, dropped_data=drop_data)

    async def _note_teardown(self, bn: Any, remaining: list[str]) -> None:
        """Say on the node what its teardown waits for (best effort: it is on its way out)."""
        previous = bn.status if isinstance(bn.status, dict) else {}
        message = f"tearing down: waiting for {', '.join(remaining)} to go"
        if previous.get("message") == message and previous.get("phase") == Phase.STOPPING:
            return
        body = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": KIND,
            "metadata": {"name": bn.metadata.name, "namespace": self.namespace},
            "status": {**previous, "phase": Phase.STOPPING, "message": message},
        }
        with contextlib.suppress(ApiError):
            await self.client.apply(
                BlockchainNode.Status.from_dict(body),
                field_manager=STATUS_FIELD_MANAGER,
                force=True,
            )
