"""The BlockchainNode CRD on a real kube-apiserver: installed and Established, valid resources
accepted by server-side apply, malformed ones refused by the schema, status written separately,
printer columns served."""

import copy
import json
import ssl
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ApiError, Client
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition

from nodeplane.executor.operator.crd import (
    API_VERSION,
    FIELD_MANAGER,
    KIND,
    NODE_LABEL,
    PLURAL,
    Phase,
)
from nodeplane.executor.operator.resource import (
    BlockchainNode,
    NodeResource,
    blockchain_node_body,
    node_resource_of,
)
from nodeplane.protocol import NodeSpec
from tests.support.kube import KubeTestCluster

pytestmark = pytest.mark.usefixtures("blockchainnode_crd")

SPEC = NodeSpec.model_validate(
    {
        "chain": "ethereum",
        "network": "sepolia",
        "nodeType": "full",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.12"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
        "storage": {"size": "500Gi", "storageClass": "fast-ssd"},
        "resources": {"cpuRequest": "2", "cpuLimit": "4", "memoryRequest": "8Gi"},
        "overrides": {
            "files": {"execution": {"cache": 4096, "verbosity": "3", "snapshot": True}},
            "args": {"consensus": ["--target-peers=80"]},
        },
        "desiredState": "running",
        "restartGeneration": 2,
        "operator": {"serviceType": "NodePort"},
    }
)


def node(name: str = "sepolia-1", revision: int = 7) -> NodeResource:
    return NodeResource(node_id=uuid.uuid4(), name=name, revision=revision, spec=SPEC)


def apply_body(kube: Client, body: dict[str, Any], namespace: str) -> Any:
    """Server-side apply of a raw body as the operator's field manager (what the API server sees
    is exactly `body`, not a model's reading of it)."""
    obj = BlockchainNode.from_dict(body) if "metadata" in body else body
    return kube.apply(obj, namespace=namespace, field_manager=FIELD_MANAGER, force=True)


def _raw(
    cluster: KubeTestCluster, method: str, path: str, body: dict[str, Any], content_type: str
) -> httpx.Response:
    """One request with a raw JSON body (JSON is valid YAML too), bypassing any client model, so
    malformed values reach the API server exactly as written."""
    token = cluster.kubeconfig.read_text().split('token: "')[1].split('"')[0]
    tls = ssl.create_default_context(cafile=str(cluster.directory / "certs" / "apiserver.crt"))
    with httpx.Client(verify=tls, base_url=f"https://127.0.0.1:{cluster.port}") as http:
        return http.request(
            method,
            path,
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        )


def raw_apply(cluster: KubeTestCluster, body: dict[str, Any], namespace: str) -> httpx.Response:
    """Server-side apply (PATCH application/apply-patch+yaml) as the operator's field manager."""
    name = body["metadata"]["name"]
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
    return _raw(
        cluster,
        "PATCH",
        f"{path}?fieldManager={FIELD_MANAGER}&force=true",
        body,
        "application/apply-patch+yaml",
    )


def raw_create(cluster: KubeTestCluster, body: dict[str, Any], namespace: str) -> httpx.Response:
    """A plain create (POST), which the schema validates without server-side apply's typing."""
    path = f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}"
    return _raw(cluster, "POST", path, body, "application/json")


def refused_by_apply(response: httpx.Response) -> bool:
    """Whether a server-side apply was refused for the body's content.

    The schema refuses with 422 Invalid. A value of the wrong type (a list where a string is
    expected) fails earlier, when the 1.20 API server builds the typed patch, and comes back as a
    500 whose message says so; the object is not written either way.
    """
    if response.status_code == 422:
        return bool(response.json()["reason"] == "Invalid")
    return response.status_code == 500 and "failed to create typed patch object" in response.text


def test_crd_is_established_with_names_and_printer_columns(
    blockchainnode_crd: CustomResourceDefinition,
) -> None:
    spec = blockchainnode_crd.spec
    assert spec.group == "nodeplane.dev"
    assert spec.scope == "Namespaced"
    assert spec.names.kind == "BlockchainNode"
    assert spec.names.shortNames == ["bn"]
    (version,) = spec.versions
    assert version.name == "v1alpha1"
    assert version.subresources.status is not None
    columns = {c.name: c.jsonPath for c in version.additionalPrinterColumns}
    assert columns["Phase"] == ".status.phase"
    assert columns["Revision"] == ".spec.revision"
    assert columns["Height"] == ".status.height"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_valid_node_is_accepted_by_server_side_apply(kube: Client, namespace: str) -> None:
    want = node()
    applied = apply_body(kube, blockchain_node_body(want, namespace), namespace)

    got = kube.get(BlockchainNode, want.name, namespace=namespace)
    assert got.metadata.labels == {NODE_LABEL: want.name}
    managers = {(m.manager, m.operation) for m in got.metadata.managedFields}
    assert (FIELD_MANAGER, "Apply") in managers
    # What comes back parses to the same node: nothing was pruned or defaulted away.
    assert node_resource_of(got.metadata.name, dict(got.spec)) == want
    assert applied.metadata.generation == 1

    # Applying the same body again changes nothing: no new generation, same resourceVersion.
    again = apply_body(kube, blockchain_node_body(want, namespace), namespace)
    assert again.metadata.generation == 1
    assert again.metadata.resourceVersion == got.metadata.resourceVersion


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    target = out
    for key in parents:
        target = target[key]
    if value is _DELETE:
        del target[leaf]
    else:
        target[leaf] = value
    return out


_DELETE = object()

MALFORMED = [
    ("spec.chain", 5, "wrong type"),
    ("spec.revision", "seven", "wrong type"),
    ("spec.clients", ["geth"], "wrong type"),
    ("spec.restartGeneration", "1", "wrong type"),
    ("spec.overrides.args.consensus", "--x", "wrong type"),
    ("spec.desiredState", "paused", "unknown desired state"),
    ("spec.nodeType", "light", "unknown node type"),
    ("spec.operator.serviceType", "ExternalName", "unknown service type"),
    ("spec.restartGeneration", -1, "negative restart generation"),
    ("spec.restartGeneration", 2**31, "restart generation past int32"),
    ("spec.revision", -3, "negative revision"),
    ("spec.nodeId", "not-a-uuid", "bad node id"),
    ("spec.nodeId", _DELETE, "missing node id"),
    ("spec.clients", {}, "no client"),
    ("spec.chain", "Ethereum", "uppercase identifier"),
    ("spec.chain", "a" * 33, "too long identifier"),
    ("spec.clients.execution.version", "1" * 65, "too long version"),
    ("spec.clients.execution.version", "1.0;rm -rf /", "bad version"),
    ("spec.storage.size", "500GB", "bad quantity"),
    ("spec.storage.size", "1" * 40, "too long quantity"),
    ("spec.storage.storageClass", "Fast_SSD", "bad storage class"),
    ("spec.overrides.args.consensus", ["target-peers=80"], "flag without dash"),
    ("spec.overrides.args.consensus", ["--"], "only dashes"),
    ("spec.overrides.args.consensus", ["--x=a\nb"], "newline in flag"),
    ("spec.overrides.args.consensus", ["--x=" + "a" * 4096], "too long flag"),
    ("spec.overrides.args.consensus", ["--x"] * 65, "too many flags"),
    ("metadata.name", "Bad_Name", "bad name"),
    ("metadata.name", "a" * 64, "too long name"),
    ("metadata.name", "node.one", "dotted name"),
]


@pytest.mark.parametrize(
    ("path", "value"), [(p, v) for p, v, _ in MALFORMED], ids=[w for _, _, w in MALFORMED]
)
def test_malformed_node_is_refused_by_the_api_server(
    kube_cluster: KubeTestCluster, kube: Client, namespace: str, path: str, value: Any
) -> None:
    body = _set(blockchain_node_body(node(), namespace), path, value)
    applied = raw_apply(kube_cluster, body, namespace)
    assert refused_by_apply(applied), applied.text
    created = raw_create(kube_cluster, body, namespace)
    assert created.status_code == 422, created.text
    assert created.json()["reason"] == "Invalid"
    assert list(kube.list(BlockchainNode, namespace=namespace)) == []


def test_the_unmodified_body_is_accepted_by_the_raw_requests(
    kube_cluster: KubeTestCluster, namespace: str
) -> None:
    # The control for the table above: the same raw requests without the defect succeed.
    applied = raw_apply(kube_cluster, blockchain_node_body(node("one"), namespace), namespace)
    assert applied.status_code == 201, applied.text
    created = raw_create(kube_cluster, blockchain_node_body(node("two"), namespace), namespace)
    assert created.status_code == 201, created.text


def test_status_subresource_is_written_separately(kube: Client, namespace: str) -> None:
    want = node()
    apply_body(kube, blockchain_node_body(want, namespace), namespace)
    status = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": want.name, "namespace": namespace},
        "status": {
            "phase": Phase.SYNCING,
            "observedGeneration": 1,
            "revision": 7,
            "height": 123456,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Syncing",
                    "message": "execution is syncing",
                    "lastTransitionTime": "2024-05-01T10:00:00Z",
                }
            ],
            "containers": [
                {"role": "execution", "container": "execution", "status": "syncing", "ready": True},
                {"role": "consensus", "container": "consensus", "status": "running", "ready": True},
            ],
        },
    }
    written = kube.apply(
        BlockchainNode.Status.from_dict(status),
        name=want.name,
        namespace=namespace,
        field_manager=FIELD_MANAGER,
        force=True,
    )
    assert written.status["phase"] == "Syncing"
    # Writing status does not bump the generation (only spec changes do).
    assert written.metadata.generation == 1

    # A spec apply does not touch the status...
    apply_body(kube, blockchain_node_body(want, namespace), namespace)
    got = kube.get(BlockchainNode, want.name, namespace=namespace)
    assert got.status["height"] == 123456
    # ...and a status written through the main resource is ignored.
    body = blockchain_node_body(want, namespace)
    body["status"] = {"phase": "Error"}
    apply_body(kube, body, namespace)
    assert kube.get(BlockchainNode, want.name, namespace=namespace).status["phase"] == "Syncing"


@pytest.mark.parametrize(
    "status",
    [{"phase": "Exploded"}, {"height": -1}, {"containers": [{"role": "x", "status": "weird"}]}],
    ids=["unknown phase", "negative height", "unknown process status"],
)
def test_malformed_status_is_refused(kube: Client, namespace: str, status: dict[str, Any]) -> None:
    want = node()
    apply_body(kube, blockchain_node_body(want, namespace), namespace)
    body = {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": want.name}}
    with pytest.raises(ApiError) as refused:
        kube.apply(
            BlockchainNode.Status.from_dict({**body, "status": status}),
            name=want.name,
            namespace=namespace,
            field_manager=FIELD_MANAGER,
            force=True,
        )
    assert refused.value.status.code == 422


def test_kubectl_prints_the_columns(
    kube_cluster: KubeTestCluster, kube: Client, namespace: str
) -> None:
    want = node(name="col-node", revision=12)
    apply_body(kube, blockchain_node_body(want, namespace), namespace)
    kube.apply(
        BlockchainNode.Status.from_dict(
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": want.name},
                "status": {"phase": "Running", "height": 4242},
            }
        ),
        name=want.name,
        namespace=namespace,
        field_manager=FIELD_MANAGER,
        force=True,
    )
    out = kube_cluster.kubectl("get", "bn", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "PHASE", "REVISION", "HEIGHT", "AGE"]
    assert out[1].split()[:4] == ["col-node", "Running", "12", "4242"]
    wide = kube_cluster.kubectl("get", "blockchainnodes", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[5:] == ["CHAIN", "NETWORK", "DESIRED"]
    assert wide.splitlines()[1].split()[5:] == ["ethereum", "sepolia", "running"]


def test_kubectl_applies_the_committed_crd_with_kustomize(kube_cluster: KubeTestCluster) -> None:
    crd_dir = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "crd"
    # Same content as the session's CRD, so this changes nothing the other tests see.
    applied = kube_cluster.kubectl("apply", "-k", str(crd_dir))
    assert "customresourcedefinition.apiextensions.k8s.io/blockchainnodes.nodeplane.dev" in (
        applied.stdout
    )
    established = kube_cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/blockchainnodes.nodeplane.dev"
    )
    assert "condition met" in established.stdout
