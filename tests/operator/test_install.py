"""The install manifests: `kubectl apply -k deploy/kubernetes` succeeds on the test cluster, and
the operator does everything it does (leader election, BlockchainNodes and their status, the
children, the claims, storage classes and nodes) under its ServiceAccount's RBAC alone, which
grants nothing more (no Secrets, no other namespace)."""

import asyncio
import uuid
from pathlib import Path

import pytest
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import PersistentVolumeClaim, Pod, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, Role

from nodeplane.executor.operator.crd import NODE_LABEL
from nodeplane.executor.operator.leader import LeaderElector, LeaseConfig
from nodeplane.executor.operator.resource import BlockchainNode
from nodeplane.protocol import ProcessStatus
from tests.operator.harness import (
    exists,
    litecoin_assigned,
    operator_loop,
    running_state,
    set_pod_status,
)
from tests.support.calls import wait_until
from tests.support.kube import KubeTestCluster

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "nodeplane-system"
ACCOUNT = "nodeplane-operator"


@pytest.fixture(scope="module")
def installed(kube_cluster: KubeTestCluster) -> KubeTestCluster:
    """The manifests applied with kubectl, as the README says."""
    applied = kube_cluster.kubectl("apply", "-k", str(REPO / "deploy" / "kubernetes"))
    assert "deployment.apps/nodeplane-operator" in applied.stdout, applied.stdout
    return kube_cluster


@pytest.fixture(scope="module")
def operator_kubeconfig(
    installed: KubeTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig with the operator ServiceAccount's token."""
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    return installed.service_account_kubeconfig(NAMESPACE, ACCOUNT, path)


def test_kubectl_apply_k_installs_the_operator(installed: KubeTestCluster, kube: Client) -> None:
    deployment = kube.get(Deployment, "nodeplane-operator", namespace=NAMESPACE)
    assert deployment.spec.replicas == 1
    pod_spec = deployment.spec.template.spec
    assert pod_spec.serviceAccountName == ACCOUNT
    (container,) = pod_spec.containers
    assert container.args[:2] == ["operator", "run"]
    assert kube.get(ServiceAccount, ACCOUNT, namespace=NAMESPACE)
    assert kube.get(Secret, "nodeplane-operator-key", namespace=NAMESPACE)
    assert kube.get(Role, ACCOUNT, namespace=NAMESPACE)
    assert kube.get(ClusterRole, ACCOUNT)
    # Applying again changes nothing and fails nothing.
    again = installed.kubectl("apply", "-k", str(REPO / "deploy" / "kubernetes"))
    assert "configured" not in again.stdout, again.stdout


def test_the_operator_works_under_its_service_account_alone(
    operator_kubeconfig: Path, kube: Client
) -> None:
    name = f"ltc-{uuid.uuid4().hex[:6]}"
    with operator_loop(operator_kubeconfig, NAMESPACE) as op:
        op.run(op.backend.refresh_cluster_info())
        assert op.backend._cluster_info_errors == {}

        node = litecoin_assigned(name)
        op.run(op.backend.apply(node))
        wait_until(lambda: exists(kube, Pod, f"{name}-0", NAMESPACE), 30, what="the pod")
        set_pod_status(kube, NAMESPACE, f"{name}-0", {"node": running_state()})
        wait_until(
            lambda: op.run(op.backend.observe(node))[0].status == ProcessStatus.RUNNING,
            30,
            what="running, under the service account",
        )
        op.run(op.backend.teardown(node.model_copy(update={"deleted": True})))
        assert exists(kube, BlockchainNode, name, NAMESPACE) is None
        claims = kube.list(PersistentVolumeClaim, namespace=NAMESPACE, labels={NODE_LABEL: name})
        assert [c for c in claims if c.metadata.deletionTimestamp is None] == []

        async def elect() -> None:
            elector = LeaderElector(
                op.client,
                NAMESPACE,
                str(uuid.uuid4()),
                LeaseConfig(f"lease-{name}", 2.0, 1.5, 0.2),
            )
            await elector.acquire()
            assert await elector.try_acquire_or_renew() == (True, None)
            await elector.release()

        op.run(elect())


def test_the_service_account_gets_nothing_more(operator_kubeconfig: Path) -> None:
    client = AsyncClient(config=KubeConfig.from_file(operator_kubeconfig))

    async def forbidden() -> list[int]:
        codes = []
        for call in (
            client.list(Secret, namespace=NAMESPACE),
            client.list(Pod, namespace="default"),
            client.list(BlockchainNode, namespace="default"),
        ):
            try:
                _ = [obj async for obj in call]
            except ApiError as exc:
                codes.append(exc.status.code)
        try:
            await client.delete(Pod, "anything", namespace=NAMESPACE)
        except ApiError as exc:
            codes.append(exc.status.code)
        await client.close()
        return codes

    assert asyncio.run(forbidden()) == [403, 403, 403, 403]
