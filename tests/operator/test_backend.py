"""The operator backend (the runtime's outer loop side) with the controller on a real API server:
apply waits for the controller's render, a bad spec is an ApplyError, observe maps the status,
stop/start/restart, teardown keeps or drops the claim and returns once the finalizer let go,
capabilities and resources read from the cluster."""

import uuid

import pytest
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Node, PersistentVolumeClaim, Pod, Service
from lightkube.resources.storage_v1 import StorageClass
from lightkube.types import PatchType

from nodeplane.executor.operator.crd import NODE_LABEL
from nodeplane.executor.operator.render import RESTART_ANNOTATION
from nodeplane.executor.operator.resource import BlockchainNode
from nodeplane.executor.runtime.backend import ApplyError
from nodeplane.protocol import (
    DesiredState,
    ExecutorKind,
    NodeSpec,
    ProcessStatus,
    RuntimeEventType,
)
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


def claims(kube: Client, namespace: str, name: str) -> list[str]:
    return [
        c.metadata.name
        for c in kube.list(PersistentVolumeClaim, namespace=namespace, labels={NODE_LABEL: name})
        if c.metadata.deletionTimestamp is None
    ]


def test_apply_observe_stop_start_restart(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace) as op:
        assert op.backend.kind == ExecutorKind.OPERATOR
        node = litecoin_assigned("ltc-a", revision=4)
        op.run(op.backend.apply(node))
        bn = kube.get(BlockchainNode, "ltc-a", namespace=namespace)
        assert bn.spec["nodeId"] == str(node.node_id)
        assert bn.spec["revision"] == 4
        assert bn.spec["restartGeneration"] == 0
        # apply returned: the controller had rendered this generation.
        assert bn.status["observedGeneration"] == bn.metadata.generation
        assert kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.replicas == 1
        (process,) = op.run(op.backend.observe(node))
        assert process.role == "node" and process.status == ProcessStatus.STARTING

        wait_until(lambda: exists(kube, Pod, "ltc-a-0", namespace), 30, what="the pod")
        set_pod_status(kube, namespace, "ltc-a-0", {"node": running_state()})
        wait_until(
            lambda: op.run(op.backend.observe(node))[0].status == ProcessStatus.RUNNING,
            30,
            what="process running",
        )

        stopped = changed(node, desired_state=DesiredState.STOPPED)
        op.run(op.backend.apply(stopped))
        assert kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.replicas == 0
        wait_until(
            lambda: op.run(op.backend.observe(stopped))[0].status == ProcessStatus.STOPPED,
            30,
            what="process stopped",
        )
        assert claims(kube, namespace, "ltc-a") == ["data-ltc-a-0"]

        started = changed(stopped, desired_state=DesiredState.RUNNING)
        op.run(op.backend.apply(started))
        assert kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.replicas == 1

        restarted = changed(started, restart_generation=1)
        op.run(op.backend.apply(restarted))
        template = kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.template
        assert template.metadata.annotations[RESTART_ANNOTATION] == "1"


def test_a_spec_that_cannot_render_is_an_apply_error(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("ltc-bad", overrides={"args": {"node": ["-datadir=/etc"]}})
        with pytest.raises(ApplyError, match="datadir"):
            op.run(op.backend.apply(node))
        assert exists(kube, BlockchainNode, "ltc-bad", namespace) is None


def test_a_name_held_by_another_node_is_refused(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace) as op:
        op.run(op.backend.apply(litecoin_assigned("ltc-same")))
        other = litecoin_assigned("ltc-same")
        with pytest.raises(ApplyError, match="belongs to another node"):
            op.run(op.backend.apply(other))
        # Nor is it observed or torn down as the other node's.
        assert op.run(op.backend.observe(other)) == []
        op.run(op.backend.teardown(other.model_copy(update={"deleted": True})))
        assert exists(kube, BlockchainNode, "ltc-same", namespace) is not None


@pytest.mark.parametrize("retain_data", [True, False])
def test_teardown_returns_once_the_node_is_gone(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str, retain_data: bool
) -> None:
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("ltc-t")
        op.run(op.backend.apply(node))
        wait_until(lambda: claims(kube, namespace, "ltc-t"), 30, what="the claim")
        tombstone = node.model_copy(update={"deleted": True, "retain_data": retain_data})
        op.run(op.backend.teardown(tombstone))
        assert exists(kube, BlockchainNode, "ltc-t", namespace) is None
        assert exists(kube, StatefulSet, "ltc-t", namespace) is None
        assert claims(kube, namespace, "ltc-t") == (["data-ltc-t-0"] if retain_data else [])
        # Tearing down again (a retry after a lost confirmation) is a no-op.
        op.run(op.backend.teardown(tombstone))


def test_capabilities_and_resources_come_from_the_cluster(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    sc_name = f"fast-{uuid.uuid4().hex[:6]}"
    node_name = f"worker-{uuid.uuid4().hex[:6]}"
    kube.create(StorageClass(metadata=ObjectMeta(name=sc_name), provisioner="example.test/none"))
    kube.create(Node(metadata=ObjectMeta(name=node_name)))
    kube.patch(
        Node.Status,
        node_name,
        {"status": {"allocatable": {"cpu": "3500m", "memory": "8Gi"}}},
        patch_type=PatchType.MERGE,
    )
    try:
        with operator_loop(kube_cluster, namespace, start=False) as op:
            op.run(op.backend.refresh_cluster_info())
            capabilities = op.backend.capabilities()
            assert sc_name in capabilities.storage_classes
            litecoin = next(c for c in capabilities.chains if c.chain == "litecoin")
            (client,) = litecoin.roles[0].clients
            assert "0.21.4" in client.versions
            resources = op.backend.resources()
            # Other tests' nodes may exist in the session's cluster: at least this one counts.
            assert resources.cpu_cores is not None and resources.cpu_cores >= 3.5
            assert resources.memory_bytes is not None and resources.memory_bytes >= 8 * 2**30
    finally:
        kube.delete(StorageClass, sc_name)
        kube.delete(Node, node_name)


def test_container_failures_and_restarts_are_runtime_events(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("ltc-ev")
        op.run(op.backend.apply(node))
        wait_until(lambda: exists(kube, Pod, "ltc-ev-0", namespace), 30, what="the pod")

        def observed_message(text: str) -> bool:
            (process,) = op.run(op.backend.observe(node))
            return text in (process.message or "")

        set_pod_status(kube, namespace, "ltc-ev-0", {"node": running_state()})
        wait_until(
            lambda: op.run(op.backend.observe(node))[0].status == ProcessStatus.RUNNING,
            30,
            what="running",
        )
        assert op.backend.drain_events() == []

        set_pod_status(
            kube, namespace, "ltc-ev-0", {"node": waiting_state("ImagePullBackOff", "no such tag")}
        )
        wait_until(lambda: observed_message("ImagePullBackOff"), 30, what="the pull failure")
        (failed,) = op.backend.drain_events()
        assert failed.type == RuntimeEventType.NODE_PROCESS_CRASHED
        assert failed.node_id == node.node_id and "no such tag" in failed.message

        set_pod_status(
            kube, namespace, "ltc-ev-0", {"node": waiting_state("CrashLoopBackOff", restarts=2)}
        )
        wait_until(lambda: observed_message("CrashLoopBackOff"), 30, what="the crash loop")
        (restarted,) = op.backend.drain_events()
        assert restarted.type == RuntimeEventType.NODE_PROCESS_RESTARTED
        assert restarted.payload["restarts"] == 2
        op.run(op.backend.observe(node))
        assert op.backend.drain_events() == []


def test_the_public_service_follows_the_spec(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    """The public ports' Service takes the spec's type in place (the same object, node ports
    allocated and dropped by the API server); the headless Service stays as it is."""
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("ltc-pub")
        op.run(op.backend.apply(node))
        public = kube.get(Service, "ltc-pub-public", namespace=namespace)
        assert public.spec.type == "ClusterIP" and public.spec.clusterIP not in (None, "None")
        assert [(p.name, p.port, p.nodePort) for p in public.spec.ports] == [
            ("node-p2p", 19444, None)
        ]
        headless = kube.get(Service, "ltc-pub", namespace=namespace)
        assert headless.spec.clusterIP == "None"
        for service_type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER):
            node = changed(node, operator=OperatorHints(service_type=service_type))
            op.run(op.backend.apply(node))
            now = kube.get(Service, "ltc-pub-public", namespace=namespace)
            assert now.spec.type == service_type.value
            assert now.metadata.uid == public.metadata.uid
            assert all(p.nodePort for p in now.spec.ports)
        node = changed(node, operator=OperatorHints(service_type=ServiceType.CLUSTER_IP))
        op.run(op.backend.apply(node))
        back = kube.get(Service, "ltc-pub-public", namespace=namespace)
        assert back.spec.type == "ClusterIP" and back.metadata.uid == public.metadata.uid
        assert [p.nodePort for p in back.spec.ports] == [None]
        assert kube.get(Service, "ltc-pub", namespace=namespace).metadata.resourceVersion == (
            headless.metadata.resourceVersion
        )


def test_a_node_without_public_ports_has_no_public_service(
    kube: Client, kube_cluster: KubeTestCluster, namespace: str
) -> None:
    """An anvil devnet listens on loopback only: a Service of its public ports would be empty,
    so there is none, and one left from an earlier revision is deleted."""
    with operator_loop(kube_cluster, namespace) as op:
        node = litecoin_assigned("eth-dev", operator={"serviceType": "NodePort"})
        op.run(op.backend.apply(node))
        assert exists(kube, Service, "eth-dev-public", namespace) is not None
        devnet = NodeSpec.model_validate(
            {
                "chain": "ethereum",
                "network": "devnet",
                "clients": {"execution": {"name": "anvil", "version": "1.0.0"}},
                "storage": {"size": "1Gi"},
                "operator": {"serviceType": "NodePort"},
            }
        )
        op.run(op.backend.apply(node.model_copy(update={"revision": 2, "spec": devnet})))
        assert exists(kube, Service, "eth-dev-public", namespace) is None
        assert exists(kube, Service, "eth-dev", namespace) is not None
