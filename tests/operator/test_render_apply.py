"""Rendered objects on a real API server and controller-manager: accepted by server-side apply,
the StatefulSet makes its Pod and PVC, re-applying changes nothing, stop scales to zero, and
deleting the BlockchainNode cascades to everything but the PVC.

There is no kubelet or scheduler, so no container runs; the Pod object is what is checked."""

import copy
import uuid
from typing import Any

import pytest
from lightkube import ApiError, Client
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Service

from nodeplane.chains.base import ChainAdapter
from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum.adapter import ETHEREUM
from nodeplane.executor.operator.crd import FIELD_MANAGER, NODE_LABEL
from nodeplane.executor.operator.drift import needs_apply, stamped
from nodeplane.executor.operator.images import NODE_GROUP, NODE_USER
from nodeplane.executor.operator.render import (
    PROBE_CONTAINER,
    RESTART_ANNOTATION,
    Owner,
    RenderedNode,
    child_name,
    render_node,
)
from nodeplane.executor.operator.resource import BlockchainNode, NodeResource, blockchain_node_body
from nodeplane.protocol import NodeSpec
from tests.support.calls import wait_until

pytestmark = pytest.mark.usefixtures("blockchainnode_crd")

KINDS: dict[str, Any] = {
    "ConfigMap": ConfigMap,
    "Service": Service,
    "StatefulSet": StatefulSet,
}


def litecoin_node(name: str, **changes: Any) -> NodeResource:
    spec = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
        "storage": {"size": "1Gi"},
        **changes,
    }
    return NodeResource(uuid.uuid4(), name, 1, NodeSpec.model_validate(spec))


def apply_node(
    kube: Client, node: NodeResource, adapter: ChainAdapter, namespace: str
) -> RenderedNode:
    """Apply the BlockchainNode, then its rendered children, as the operator's controller does:
    stamped with their hash and applied only when the live object differs (on 1.20 even an
    unchanged server-side apply bumps the object once a second has passed)."""
    bn = kube.apply(
        BlockchainNode.from_dict(blockchain_node_body(node, namespace)),
        field_manager=FIELD_MANAGER,
        force=True,
    )
    rendered = render_node(node, adapter, Owner(bn.metadata.name, bn.metadata.uid), namespace)
    for rendered_body in rendered.objects():
        body = stamped(rendered_body)
        try:
            live = kube.get(
                KINDS[body["kind"]], body["metadata"]["name"], namespace=namespace
            ).to_dict()
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            live = None
        if needs_apply(live, body):
            kube.apply(from_dict(body), field_manager=FIELD_MANAGER, force=True)
    return rendered


def versions(kube: Client, rendered: RenderedNode, namespace: str) -> dict[str, str]:
    out = {}
    for body in rendered.objects():
        obj = kube.get(KINDS[body["kind"]], body["metadata"]["name"], namespace=namespace)
        out[f"{body['kind']}/{body['metadata']['name']}"] = obj.metadata.resourceVersion
    return out


def settled(kube: Client, name: str, namespace: str) -> bool:
    sts = kube.get(StatefulSet, name, namespace=namespace)
    status = sts.status
    return bool(
        status
        and status.observedGeneration == sts.metadata.generation
        and status.replicas == sts.spec.replicas
        and status.currentRevision
        and status.currentRevision == status.updateRevision
    )


def gone(kube: Client, kind: Any, name: str, namespace: str) -> bool:
    try:
        kube.get(kind, name, namespace=namespace)
    except ApiError as exc:
        return exc.status.code == 404
    return False


def test_statefulset_makes_its_pod_and_claim(kube: Client, namespace: str) -> None:
    node = litecoin_node("ltc-a", storage={"size": "2Gi", "storageClass": "fast-ssd"})
    apply_node(kube, node, LITECOIN, namespace)
    name = child_name(node.name)
    pod = wait_until(
        lambda: next(
            iter(kube.list(Pod, namespace=namespace, labels={NODE_LABEL: node.name})), None
        ),
        timeout=30,
        what="the controller-manager to create the pod",
    )
    assert pod.metadata.name == f"{name}-0"
    container, sidecar = pod.spec.containers
    assert container.name == "node" and sidecar.name == PROBE_CONTAINER
    assert container.command[0] == "litecoind"
    assert pod.spec.terminationGracePeriodSeconds == 600
    assert pod.metadata.annotations[RESTART_ANNOTATION] == "0"
    # The pod's security settings as the API server kept them (a field it dropped, say a gated
    # one, would also make every resync re-apply the StatefulSet).
    security = pod.spec.securityContext
    assert (security.fsGroup, security.fsGroupChangePolicy) == (NODE_GROUP, "OnRootMismatch")
    assert security.seccompProfile.type == "RuntimeDefault" and security.runAsNonRoot
    for c in (*pod.spec.initContainers, container):
        assert c.securityContext.runAsUser == NODE_USER and c.securityContext.runAsNonRoot
        assert c.securityContext.allowPrivilegeEscalation is False
        assert c.securityContext.capabilities.drop == ["ALL"]
    pvc = wait_until(
        lambda: next(iter(kube.list(PersistentVolumeClaim, namespace=namespace)), None),
        timeout=30,
        what="the claim",
    )
    assert pvc.metadata.name == f"data-{name}-0"
    assert pvc.metadata.labels[NODE_LABEL] == node.name
    assert pvc.spec.storageClassName == "fast-ssd"
    assert pvc.spec.resources.requests["storage"] == "2Gi"


def test_reapplying_the_same_render_changes_nothing(kube: Client, namespace: str) -> None:
    spec = {
        "chain": "ethereum",
        "network": "sepolia",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.12"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
        "resources": {"cpuRequest": "3", "memoryLimit": "9Gi"},
        "operator": {"serviceType": "NodePort"},
    }
    node = NodeResource(uuid.uuid4(), "eth-a", 1, NodeSpec.model_validate(spec))
    rendered = apply_node(kube, node, ETHEREUM, namespace)
    assert len(rendered.objects()) == 4
    # The controller-manager writes the StatefulSet's status once it made the pod; wait for that,
    # since a status write is a new resourceVersion too.
    wait_until(
        lambda: settled(kube, child_name(node.name), namespace), 30, what="the StatefulSet status"
    )
    before = versions(kube, rendered, namespace)
    # The operator restarted re-renders and re-applies everything: no object may change.
    apply_node(kube, node, ETHEREUM, namespace)
    assert versions(kube, rendered, namespace) == before
    # P2P discovery over UDP beside TCP, and lighthouse's QUIC over UDP alone, as the API server
    # keeps them (a NodePort Service may mix protocols on 1.20; a LoadBalancer is created with
    # TCP or UDP alone before 1.24, see the test below).
    public = kube.get(Service, f"{child_name(node.name)}-public", namespace=namespace)
    assert {(p.port, p.protocol) for p in public.spec.ports} == {
        (30303, "TCP"),
        (30303, "UDP"),
        (9000, "TCP"),
        (9000, "UDP"),
        (9001, "UDP"),
    }
    assert all(p.nodePort for p in public.spec.ports)


def test_a_load_balancer_node_with_udp_ports_applies_on_1_20(kube: Client, namespace: str) -> None:
    """An API server before 1.24 refuses to create a LoadBalancer mixing TCP and UDP: the
    rendering splits the UDP ports into a second LoadBalancer, which it accepts."""
    spec = {
        "chain": "ethereum",
        "network": "sepolia",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.12"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
        "operator": {"serviceType": "LoadBalancer"},
    }
    node = NodeResource(uuid.uuid4(), "eth-lb", 1, NodeSpec.model_validate(spec))
    rendered = apply_node(kube, node, ETHEREUM, namespace)
    assert rendered.public_service is not None and rendered.public_udp_service is not None
    tcp = kube.get(Service, "eth-lb-public", namespace=namespace)
    udp = kube.get(Service, "eth-lb-public-udp", namespace=namespace)
    assert tcp.spec.type == udp.spec.type == "LoadBalancer"
    assert {(p.port, p.protocol) for p in tcp.spec.ports} == {(30303, "TCP"), (9000, "TCP")}
    assert {(p.port, p.protocol) for p in udp.spec.ports} == {
        (30303, "UDP"),
        (9000, "UDP"),
        (9001, "UDP"),
    }
    assert all(p.nodePort for p in [*tcp.spec.ports, *udp.spec.ports])
    assert udp.spec.selector == tcp.spec.selector == {NODE_LABEL: "eth-lb"}
    # What the split avoids: the same ports in one LoadBalancer are refused at creation.
    mixed = copy.deepcopy(rendered.public_service)
    mixed["metadata"]["name"] = "eth-lb-both"
    mixed["spec"]["ports"] += rendered.public_udp_service["spec"]["ports"]
    with pytest.raises(ApiError) as refused:
        kube.apply(from_dict(mixed), field_manager=FIELD_MANAGER, force=True)
    assert refused.value.status.code == 422
    assert "more than 1 protocol when type is 'LoadBalancer'" in (
        refused.value.status.message or ""
    )


def test_stop_scales_to_zero_and_keeps_the_claim(kube: Client, namespace: str) -> None:
    node = litecoin_node("ltc-b")
    apply_node(kube, node, LITECOIN, namespace)
    labels = {NODE_LABEL: node.name}
    wait_until(lambda: list(kube.list(Pod, namespace=namespace, labels=labels)), 30, what="pod")
    apply_node(kube, litecoin_node("ltc-b", desiredState="stopped"), LITECOIN, namespace)
    sts = kube.get(StatefulSet, child_name(node.name), namespace=namespace)
    assert sts.spec.replicas == 0
    wait_until(
        lambda: not list(kube.list(Pod, namespace=namespace, labels=labels)), 30, what="no pod"
    )
    assert [p.metadata.name for p in kube.list(PersistentVolumeClaim, namespace=namespace)] == [
        f"data-{child_name(node.name)}-0"
    ]


def test_restart_rolls_the_pod_template(kube: Client, namespace: str) -> None:
    node = litecoin_node("ltc-c")
    apply_node(kube, node, LITECOIN, namespace)
    sts = kube.get(StatefulSet, child_name(node.name), namespace=namespace)
    apply_node(kube, litecoin_node("ltc-c", restartGeneration=1), LITECOIN, namespace)
    rolled = kube.get(StatefulSet, child_name(node.name), namespace=namespace)
    assert rolled.spec.template.metadata.annotations[RESTART_ANNOTATION] == "1"
    assert rolled.metadata.generation == sts.metadata.generation + 1


def test_deleting_the_blockchain_node_cascades_but_keeps_the_claim(
    kube: Client, namespace: str
) -> None:
    node = litecoin_node("ltc-d")
    rendered = apply_node(kube, node, LITECOIN, namespace)
    wait_until(
        lambda: list(kube.list(PersistentVolumeClaim, namespace=namespace)), 30, what="claim"
    )
    kube.delete(BlockchainNode, node.name, namespace=namespace)
    for body in rendered.objects():
        kind, name = KINDS[body["kind"]], body["metadata"]["name"]
        wait_until(
            lambda kind=kind, name=name: gone(kube, kind, name, namespace),
            timeout=60,
            what=f"{body['kind']}/{name} to be garbage-collected",
        )
    claims = list(kube.list(PersistentVolumeClaim, namespace=namespace))
    assert [c.metadata.name for c in claims] == [f"data-{child_name(node.name)}-0"]
