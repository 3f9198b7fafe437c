"""The inner controller on a real API server and controller-manager: it renders a BlockchainNode
into its children, writes `.status` from the Pod (whose status the test writes, as a kubelet
would), puts back a child edited or deleted by hand, tears down through its finalizer, and lists
again when a watch's resourceVersion is gone."""

import asyncio
import time
from typing import Any

import pytest
from lightkube import Client
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Service
from lightkube.types import PatchType

from nodeplane.executor.operator.backend import DROP_DATA_ANNOTATION
from nodeplane.executor.operator.controller import FINALIZER
from nodeplane.executor.operator.crd import FIELD_MANAGER, NODE_LABEL
from nodeplane.executor.operator.render import PROBE_CONTAINER, config_map_name
from nodeplane.executor.operator.resource import BlockchainNode, NodeResource, blockchain_node_body
from nodeplane.protocol.enums import ServiceType
from nodeplane.protocol.spec import OperatorHints
from tests.operator.harness import (
    changed,
    exists,
    litecoin_assigned,
    operator_loop,
    running_state,
    set_pod_status,
    waiting_state,
)
from tests.support.calls import wait_until
from tests.support.kube import KubeTestCluster

pytestmark = pytest.mark.usefixtures("blockchainnode_crd")


def apply_bn(kube: Client, namespace: str, name: str, **spec: Any) -> NodeResource:
    """Apply a BlockchainNode as the operator backend does (without waiting for it)."""
    assigned = litecoin_assigned(name, **spec)
    assert assigned.spec is not None
    node = NodeResource(assigned.node_id, name, assigned.revision, assigned.spec)
    kube.apply(
        BlockchainNode.from_dict(blockchain_node_body(node, namespace)),
        field_manager=FIELD_MANAGER,
        force=True,
    )
    return node


def status(kube: Client, namespace: str, name: str) -> dict[str, Any]:
    obj = kube.get(BlockchainNode, name, namespace=namespace)
    return obj.status if isinstance(obj.status, dict) else {}


def phase_is(kube: Client, namespace: str, name: str, phase: str) -> dict[str, Any] | None:
    current = status(kube, namespace, name)
    return current if current.get("phase") == phase else None


def test_renders_children_and_maps_pod_status_to_phase(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace):
        apply_bn(kube, namespace, "ltc-a")
        pod = wait_until(lambda: exists(kube, Pod, "ltc-a-0", namespace), 30, what="the node's pod")
        bn = kube.get(BlockchainNode, "ltc-a", namespace=namespace)
        assert FINALIZER in bn.metadata.finalizers
        for kind, name in ((StatefulSet, "ltc-a"), (Service, "ltc-a"), (ConfigMap, "ltc-a-config")):
            child = kube.get(kind, name, namespace=namespace)
            assert child.metadata.labels[NODE_LABEL] == "ltc-a"
            (owner,) = child.metadata.ownerReferences
            assert owner.uid == bn.metadata.uid and owner.controller
        assert pod.metadata.labels[NODE_LABEL] == "ltc-a"
        # No kubelet: the pod has no container status yet, so the node waits.
        pending = wait_until(
            lambda: phase_is(kube, namespace, "ltc-a", "Pending"), 30, what="phase Pending"
        )
        assert pending["containers"][0]["status"] == "starting"
        assert pending["observedGeneration"] == bn.metadata.generation
        assert pending["revision"] == 1

        set_pod_status(
            kube, namespace, "ltc-a-0", {"node": running_state(), PROBE_CONTAINER: running_state()}
        )
        running = wait_until(
            lambda: phase_is(kube, namespace, "ltc-a", "Running"), 30, what="phase Running"
        )
        (container,) = running["containers"]
        assert container == {
            "role": "node",
            "container": "node",
            "status": "running",
            "ready": True,
            "restartCount": 0,
            # This stand-in kubelet gives the pod no IP, so the probe sidecar cannot be asked
            # (test_probe_sidecar.py runs a real one): the kubelet's view stands, and says so.
            "message": "probe sidecar: the pod has no IP yet",
        }
        ready = next(c for c in running["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_crash_loop_is_an_error_with_its_reason(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace):
        apply_bn(kube, namespace, "ltc-crash")
        wait_until(lambda: exists(kube, Pod, "ltc-crash-0", namespace), 30, what="the pod")
        set_pod_status(
            kube,
            namespace,
            "ltc-crash-0",
            {"node": waiting_state("CrashLoopBackOff", "back-off 40s restarting", restarts=3)},
        )
        error = wait_until(
            lambda: phase_is(kube, namespace, "ltc-crash", "Error"), 30, what="phase Error"
        )
        (container,) = error["containers"]
        assert container["status"] == "error"
        assert container["reason"] == "CrashLoopBackOff"
        assert container["restartCount"] == 3
        assert "back-off 40s restarting" in container["message"]
        assert "CrashLoopBackOff" in error["message"]


def test_a_sidecar_that_cannot_be_pulled_is_in_the_message_and_no_error(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    """The client runs, its readiness (asked of the sidecar) fails, and the sidecar's image
    cannot be pulled: the node waits, saying why in the sidecar's own words."""
    with operator_loop(kube_cluster, namespace):
        apply_bn(kube, namespace, "ltc-side")
        wait_until(lambda: exists(kube, Pod, "ltc-side-0", namespace), 30, what="the pod")
        pull = 'Back-off pulling image "mirror.local/nodeplane:0.1.0"'
        set_pod_status(
            kube,
            namespace,
            "ltc-side-0",
            {
                "node": running_state(ready=False),
                PROBE_CONTAINER: waiting_state("ImagePullBackOff", pull),
            },
        )
        why = f"probe sidecar: ImagePullBackOff: {pull}"
        pending = wait_until(
            lambda: (
                (current := phase_is(kube, namespace, "ltc-side", "Pending"))
                and current.get("message") == f"node: {why}"
                and current
            ),
            30,
            what="the sidecar's reason in the node's message",
        )
        (container,) = pending["containers"]
        assert (container["status"], container["reason"]) == ("starting", "NotReady")
        assert container["message"] == why


def test_a_child_deleted_or_edited_by_hand_is_put_back(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace, resync=3600):  # the watches alone must do it
        apply_bn(kube, namespace, "ltc-b")
        config = wait_until(
            lambda: exists(kube, ConfigMap, config_map_name("ltc-b"), namespace), 30, what="cm"
        )
        kube.delete(ConfigMap, config_map_name("ltc-b"), namespace=namespace)
        back = wait_until(
            lambda: (
                (cm := exists(kube, ConfigMap, config_map_name("ltc-b"), namespace))
                and cm.metadata.uid != config.metadata.uid
                and cm
            ),
            30,
            what="the ConfigMap to be put back",
        )
        assert back.data == config.data

        kube.patch(
            StatefulSet,
            "ltc-b",
            {"spec": {"replicas": 3}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
            field_manager="someone",
        )
        wait_until(
            lambda: kube.get(StatefulSet, "ltc-b", namespace=namespace).spec.replicas == 1,
            30,
            what="replicas back to 1",
        )
        kube.delete(Service, "ltc-b", namespace=namespace)
        wait_until(lambda: exists(kube, Service, "ltc-b", namespace), 30, what="the Service back")


def test_a_load_balancer_node_gets_a_udp_service_that_goes_with_the_type(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    """An Ethereum node (P2P over TCP and UDP, QUIC over UDP) asking for a LoadBalancer renders
    on 1.20, whose API server refuses to create one mixing protocols: the UDP ports get a
    LoadBalancer of their own. Back to NodePort, one Service mixes them and the other goes."""
    ethereum = {
        "chain": "ethereum",
        "network": "sepolia",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.12"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
    }
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("eth-lb", **ethereum, operator={"serviceType": "LoadBalancer"})
        # The backend's apply returns once the controller rendered this generation, and raises
        # ApplyError had the API server refused a child (ApplyFailed).
        op.run(op.backend.apply(node))
        rendered = next(
            c for c in status(kube, namespace, "eth-lb")["conditions"] if c["type"] == "Rendered"
        )
        assert (rendered["status"], rendered["reason"]) == ("True", "Applied")
        # Execution and consensus share one JWT secret, as the API server keeps the pod: an
        # init container writes it once into the pod's config directory, both clients read it.
        pod = kube.get(StatefulSet, "eth-lb", namespace=namespace).spec.template.spec
        (init_jwt,) = [c for c in pod.initContainers if c.name == "init-jwt-secret"]
        assert init_jwt.command[-2:] == ["/node/config/jwt.hex", "32"]
        # Server-side apply merges containers by name; their order is not the render's.
        by_name = {c.name: c for c in pod.containers}
        assert set(by_name) == {"execution", "consensus", PROBE_CONTAINER}
        execution, consensus = by_name["execution"], by_name["consensus"]
        assert "--authrpc.jwtsecret=/node/config/jwt.hex" in execution.command
        assert "--execution-jwt=/node/config/jwt.hex" in consensus.command
        for c in (init_jwt, execution, consensus):
            assert any(m.name == "config" and m.mountPath == "/node/config" for m in c.volumeMounts)
        (config,) = [v for v in pod.volumes if v.name == "config"]
        assert config.emptyDir is not None
        tcp = kube.get(Service, "eth-lb-public", namespace=namespace)
        udp = kube.get(Service, "eth-lb-public-udp", namespace=namespace)
        assert tcp.spec.type == udp.spec.type == "LoadBalancer"
        assert {p.protocol for p in tcp.spec.ports} == {"TCP"}
        assert {(p.port, p.protocol) for p in udp.spec.ports} == {
            (30303, "UDP"),
            (9000, "UDP"),
            (9001, "UDP"),
        }

        node = changed(node, operator=OperatorHints(service_type=ServiceType.NODE_PORT))
        op.run(op.backend.apply(node))
        wait_until(
            lambda: exists(kube, Service, "eth-lb-public-udp", namespace) is None,
            30,
            what="the UDP ports' Service to go",
        )
        public = kube.get(Service, "eth-lb-public", namespace=namespace)
        assert public.spec.type == "NodePort"
        assert public.metadata.uid == tcp.metadata.uid  # updated in place
        assert {(p.port, p.protocol) for p in public.spec.ports} == {
            (30303, "TCP"),
            (30303, "UDP"),
            (9000, "TCP"),
            (9000, "UDP"),
            (9001, "UDP"),
        }
        assert phase_is(kube, namespace, "eth-lb", "Error") is None


@pytest.mark.parametrize("drop_data", [False, True])
def test_finalizer_removes_children_and_claims_only_when_asked(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str, drop_data: bool
) -> None:
    with operator_loop(kube_cluster, namespace):
        apply_bn(kube, namespace, "ltc-d")
        labels = {NODE_LABEL: "ltc-d"}
        wait_until(
            lambda: list(kube.list(PersistentVolumeClaim, namespace=namespace, labels=labels)),
            30,
            what="the claim",
        )
        wait_until(
            lambda: (
                FINALIZER
                in (
                    kube.get(BlockchainNode, "ltc-d", namespace=namespace).metadata.finalizers or []
                )
            ),
            30,
            what="the finalizer",
        )
        if drop_data:
            kube.patch(
                BlockchainNode,
                "ltc-d",
                {"metadata": {"annotations": {DROP_DATA_ANNOTATION: "true"}}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        kube.delete(BlockchainNode, "ltc-d", namespace=namespace)
        wait_until(
            lambda: exists(kube, BlockchainNode, "ltc-d", namespace) is None,
            30,
            what="the BlockchainNode to go",
        )
        for kind in (StatefulSet, ConfigMap, Service, Pod):
            assert list(kube.list(kind, namespace=namespace, labels=labels)) == [], kind
        claims = [
            c
            for c in kube.list(PersistentVolumeClaim, namespace=namespace, labels=labels)
            if c.metadata.deletionTimestamp is None
        ]
        assert len(claims) == (0 if drop_data else 1)


def test_invalid_spec_the_schema_cannot_see_is_an_error(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace):
        # A managed flag: the schema accepts any flag, the adapter refuses this one.
        apply_bn(kube, namespace, "ltc-bad", overrides={"args": {"node": ["-datadir=/etc"]}})
        error = wait_until(
            lambda: phase_is(kube, namespace, "ltc-bad", "Error"), 30, what="phase Error"
        )
        rendered = next(c for c in error["conditions"] if c["type"] == "Rendered")
        assert rendered["status"] == "False"
        assert "datadir" in rendered["message"]
        assert exists(kube, StatefulSet, "ltc-bad", namespace) is None


def test_a_watch_whose_version_is_gone_lists_again(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace, start=False) as op:
        apply_bn(kube, namespace, "ltc-w")

        async def watch_from_the_beginning() -> None:
            # Version 1 is long compacted out of the watch cache: the server answers 410.
            await op.controller.watch(BlockchainNode, resource_version="1")

        future = asyncio.run_coroutine_threadsafe(watch_from_the_beginning(), op.loop)
        try:
            wait_until(
                lambda: op.controller.lists.get("BlockchainNode", 0) >= 1,
                30,
                what="a list after the 410",
            )
            wait_until(lambda: op.controller.queue.waiting("ltc-w"), 10, what="the node queued")
        finally:
            future.cancel()


def test_resyncs_write_nothing_when_nothing_changed(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    """On a 1.20 server even an unchanged server-side apply bumps the object once a second has
    passed; the controller and the backend must not write what did not change."""
    with operator_loop(kube_cluster, namespace, resync=0.3) as op:
        assigned = litecoin_assigned("ltc-quiet")
        op.run(op.backend.apply(assigned))
        wait_until(lambda: exists(kube, Pod, "ltc-quiet-0", namespace), 30, what="the pod")
        set_pod_status(kube, namespace, "ltc-quiet-0", {"node": running_state()})
        wait_until(lambda: phase_is(kube, namespace, "ltc-quiet", "Running"), 30, what="Running")
        wait_until(
            lambda: (
                (sts := kube.get(StatefulSet, "ltc-quiet", namespace=namespace)).status
                and sts.status.readyReplicas == 1
                and sts.status.observedGeneration == sts.metadata.generation
            ),
            30,
            what="the StatefulSet's status settled",
        )
        objects = [
            (BlockchainNode, "ltc-quiet"),
            (ConfigMap, config_map_name("ltc-quiet")),
            (Service, "ltc-quiet"),
            (StatefulSet, "ltc-quiet"),
        ]

        def versions() -> dict[str, str]:
            return {
                f"{kind.__name__}/{name}": kube.get(
                    kind, name, namespace=namespace
                ).metadata.resourceVersion
                for kind, name in objects
            }

        before = versions()
        deadline = time.monotonic() + 2.5  # several resyncs, across second boundaries
        while time.monotonic() < deadline:
            op.run(op.backend.apply(assigned))
            time.sleep(0.3)
        assert versions() == before
