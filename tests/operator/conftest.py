"""Fixtures for tests against a real Kubernetes control plane (tests/support/kube.py)."""

import uuid
from collections.abc import Iterator

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

from nodeplane.executor.operator.crd import CRD_NAME, FIELD_MANAGER, crd_manifest
from tests.support.calls import wait_until
from tests.support.kube import KubeTestCluster, cluster_unavailable, free_cluster_port


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeTestCluster]:
    """One test cluster per session, on a free port, in its own temp dir; stopped at the end."""
    if reason := KubeTestCluster.unavailable_reason():
        cluster_unavailable(reason)
    cluster = KubeTestCluster(tmp_path_factory.mktemp("kube"), free_cluster_port())
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def kube(kube_cluster: KubeTestCluster) -> Client:
    """An admin lightkube client for the session's cluster."""
    return kube_cluster.client()


def crd_established(kube: Client) -> bool:
    """True once the API server serves blockchainnodes."""
    crd = kube.get(CustomResourceDefinition, CRD_NAME)
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def blockchainnode_crd(kube: Client) -> CustomResourceDefinition:
    """The BlockchainNode CRD, installed by server-side apply and Established."""
    kube.apply(from_dict(crd_manifest()), field_manager=FIELD_MANAGER)
    wait_until(lambda: crd_established(kube), timeout=30, what="the CRD to be Established")
    crd: CustomResourceDefinition = kube.get(CustomResourceDefinition, CRD_NAME)
    return crd


@pytest.fixture
def namespace(kube: Client) -> Iterator[str]:
    """A fresh namespace for one test, deleted after it."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.create(Namespace(metadata=ObjectMeta(name=name)))
    yield name
    kube.delete(Namespace, name)
