"""The operator's async parts (controller, backend) on an event loop in a thread of the test, and
what a kubelet would do (write a Pod's status), for tests against the real API server.

Tests stay synchronous: they drive the cluster with the admin client and call the backend
through `OperatorLoop.run`, while the controller keeps running on the loop in the background.
"""

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.resources.core_v1 import Pod
from lightkube.types import PatchType

from nodeplane.executor.operator.backend import OperatorBackend
from nodeplane.executor.operator.controller import NodeController
from nodeplane.executor.operator.crd import FIELD_MANAGER
from nodeplane.protocol import AssignedNodeSpec, NodeSpec
from tests.support.kube import KubeTestCluster

T = TypeVar("T")


class OperatorLoop:
    """An event loop in a daemon thread running a controller; the backend is called through it."""

    def __init__(self, cluster: KubeTestCluster | Path, namespace: str, **controller: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.namespace = namespace
        kubeconfig = cluster if isinstance(cluster, Path) else cluster.kubeconfig
        config = KubeConfig.from_file(kubeconfig)

        async def make() -> tuple[AsyncClient, NodeController, OperatorBackend]:
            client = AsyncClient(config=config, namespace=namespace, field_manager=FIELD_MANAGER)
            settings = {"resync": 2.0, "teardown_poll": 0.2, "retry_base": 0.2, **controller}
            ctl = NodeController(client, namespace, **settings)
            backend = OperatorBackend(client, namespace, apply_wait=20.0, teardown_wait=30.0)
            return client, ctl, backend

        self.client, self.controller, self.backend = self.run(make())
        self._task: Future[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coro` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_controller(self) -> None:
        """Run the controller in the background."""
        self._task = asyncio.run_coroutine_threadsafe(self.controller.run(), self.loop)

    def stop_controller(self) -> None:
        """Cancel the controller (as a killed operator would stop)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """Stop everything and the loop."""
        self.stop_controller()

        async def shutdown() -> None:
            await self.client.close()
            await asyncio.sleep(0)

        self.run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextmanager
def operator_loop(
    cluster: KubeTestCluster | Path, namespace: str, *, start: bool = True, **controller: Any
) -> Iterator[OperatorLoop]:
    """An OperatorLoop (on the cluster's admin kubeconfig, or the kubeconfig file given) whose
    controller runs (unless `start` is False); closed after."""
    op = OperatorLoop(cluster, namespace, **controller)
    if start:
        op.start_controller()
    try:
        yield op
    finally:
        op.close()


def litecoin_assigned(name: str, revision: int = 1, **spec: Any) -> AssignedNodeSpec:
    """A litecoin regtest node as the control plane assigns it."""
    body = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
        "storage": {"size": "1Gi"},
        **spec,
    }
    return AssignedNodeSpec(
        node_id=uuid.uuid4(), name=name, revision=revision, spec=NodeSpec.model_validate(body)
    )


def changed(node: AssignedNodeSpec, **spec: Any) -> AssignedNodeSpec:
    """The next revision of `node` with `spec` fields changed."""
    assert node.spec is not None
    new_spec = node.spec.model_copy(update=spec)
    return node.model_copy(update={"revision": node.revision + 1, "spec": new_spec})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def running_state(ready: bool = True) -> dict[str, Any]:
    """A container status's `state` and readiness for a running container."""
    return {"state": {"running": {"startedAt": _now()}}, "ready": ready}


def waiting_state(reason: str, message: str = "", restarts: int = 0) -> dict[str, Any]:
    """A waiting container (ContainerCreating, CrashLoopBackOff, ImagePullBackOff, ...)."""
    state: dict[str, Any] = {"state": {"waiting": {"reason": reason, "message": message}}}
    state["ready"] = False
    state["restartCount"] = restarts
    if reason == "CrashLoopBackOff":
        state["lastState"] = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": _now(),
                "finishedAt": _now(),
            }
        }
    return state


def set_pod_status(
    kube: Client, namespace: str, pod: str, containers: dict[str, dict[str, Any]]
) -> None:
    """Write a Pod's status as a kubelet would: one entry per container (name -> state)."""
    obj = kube.get(Pod, pod, namespace=namespace)
    all_ready = all(c.get("ready") for c in containers.values())
    statuses = []
    for spec in obj.spec.containers:
        entry = containers.get(spec.name, {"state": {"waiting": {"reason": "ContainerCreating"}}})
        statuses.append(
            {
                "name": spec.name,
                "image": spec.image,
                "imageID": "",
                "restartCount": entry.get("restartCount", 0),
                "ready": entry.get("ready", False),
                "state": entry["state"],
                **({"lastState": entry["lastState"]} if "lastState" in entry else {}),
            }
        )
    status = {
        "phase": "Running",
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": _now()},
            {
                "type": "Ready",
                "status": "True" if all_ready else "False",
                "lastTransitionTime": _now(),
            },
            {
                "type": "ContainersReady",
                "status": "True" if all_ready else "False",
                "lastTransitionTime": _now(),
            },
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()},
        ],
        "containerStatuses": statuses,
        "startTime": _now(),
    }
    kube.patch(Pod.Status, pod, {"status": status}, namespace=namespace, patch_type=PatchType.MERGE)


def exists(kube: Client, kind: Any, name: str, namespace: str) -> Any | None:
    """The object, or None when it does not exist."""
    try:
        return kube.get(kind, name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
