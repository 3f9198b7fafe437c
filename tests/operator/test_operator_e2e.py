"""End to end: the real control plane, `nodeplane operator run` processes and the real API server.

A litecoin node deployed from the control plane becomes a BlockchainNode, ConfigMap, StatefulSet
and Service; the test writes the Pod's status as a kubelet would, and the control plane derives
the phase from what the operator reports. Stop, start, restart and delete (keeping or dropping
the data) go through the control plane; a crash loop is an error with its reason; two replicas
elect one leader, and the follower taking over from a leader killed mid-apply converges without
touching what did not change.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client
from lightkube.codecs import from_dict
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, PersistentVolumeClaim, Pod, Service

from nodeplane.executor.operator.crd import FIELD_MANAGER, NODE_LABEL
from nodeplane.executor.operator.drift import stamped
from nodeplane.executor.operator.images import OPERATOR_IMAGE
from nodeplane.executor.operator.render import PROBE_CONTAINER, RESTART_ANNOTATION, config_map_name
from nodeplane.executor.operator.resource import (
    BlockchainNode,
    blockchain_node_body,
    node_resource_of,
)
from tests.chains.support import ensure_chain_clients
from tests.operator.harness import exists, running_state, set_pod_status, waiting_state
from tests.operator.kubelet import LocalKubelet
from tests.support.calls import wait_until
from tests.support.fleet import CREATE_NODE, LIFECYCLE, NODE, Org, make_org
from tests.support.gql import Client as Gql
from tests.support.kube import KubeTestCluster
from tests.support.operator import OperatorProcess
from tests.support.server import ADMIN_EMAIL, ADMIN_PASSWORD, ServerProcess

pytestmark = pytest.mark.usefixtures("blockchainnode_crd")

VERSION = "0.21.4"
KINDS: dict[str, Any] = {
    "BlockchainNode": BlockchainNode,
    "ConfigMap": ConfigMap,
    "StatefulSet": StatefulSet,
    "Service": Service,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("operator-server")
    proc = ServerProcess(
        database_url=f"sqlite:///{workdir / 'nodeplane.db'}", workdir=workdir, heartbeat_timeout=4
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def org(server: ServerProcess) -> Org:
    token = Gql(server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )["login"]["token"]
    return make_org(server.url, Gql(server.url, token))


def replica(
    server: ServerProcess, org_key: str, cluster: KubeTestCluster, namespace: str, dir_: Path
) -> OperatorProcess:
    return OperatorProcess(
        workdir=dir_,
        server_url=server.url,
        api_key=org_key,
        kubeconfig=cluster.kubeconfig,
        namespace=namespace,
    )


@pytest.fixture
def operator(
    server: ServerProcess, org: Org, kube_cluster: KubeTestCluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    proc = replica(server, org.executor_key(), kube_cluster, namespace, tmp_path / "op")
    proc.start()
    try:
        wait_until(lambda: executor(org), 60, what=f"the operator online\n{proc.log()}")
        yield proc
    finally:
        proc.stop()


def executor(org: Org) -> dict[str, Any] | None:
    executors = org.owner("{ executors { id name kind status capabilities } }")["executors"]
    return next((e for e in executors if e["name"] == "k8s" and e["status"] == "ONLINE"), None)


def deploy(org: Org, name: str, **spec: Any) -> str:
    found = executor(org)
    assert found is not None
    body = {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": VERSION}},
        "storage": {"size": "1Gi"},
        **spec,
    }
    created = org.owner(
        CREATE_NODE, {"input": {"executorId": found["id"], "name": name, "spec": body}}
    )["createNode"]
    node_id: str = created["id"]
    return node_id


def node(org: Org, node_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = org.owner(NODE, {"id": node_id})["node"]
    return found


def wait_phase(org: Org, node_id: str, phase: str, revision: int | None = None) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        n = node(org, node_id)
        if n is None or n["phase"] != phase:
            return None
        if revision is not None and n["observedRevision"] != revision:
            return None
        return n

    return wait_until(reached, 60, what=f"phase {phase}")


def lifecycle(org: Org, node_id: str, action: str) -> int:
    revision: int = org.owner(LIFECYCLE, {"id": node_id, "action": action})[
        "requestNodeLifecycleAction"
    ]["revision"]
    return revision


def delete(org: Org, node_id: str, retain_data: bool) -> None:
    org.owner(
        "mutation($id: UUID!, $r: Boolean!) { deleteNode(nodeId: $id, retainData: $r) { id } }",
        {"id": node_id, "r": retain_data},
    )


def claims(kube: Client, namespace: str, name: str) -> list[str]:
    return [
        c.metadata.name
        for c in kube.list(PersistentVolumeClaim, namespace=namespace, labels={NODE_LABEL: name})
        if c.metadata.deletionTimestamp is None
    ]


def children_gone(kube: Client, namespace: str, name: str) -> bool:
    return all(
        exists(kube, kind, child, namespace) is None
        for kind, child in (
            (BlockchainNode, name),
            (StatefulSet, name),
            (Service, name),
            (ConfigMap, config_map_name(name)),
        )
    )


def pod_running(kube: Client, namespace: str, name: str) -> None:
    wait_until(lambda: exists(kube, Pod, f"{name}-0", namespace), 30, what="the pod")
    set_pod_status(kube, namespace, f"{name}-0", {"node": running_state()})


def test_lifecycle_through_the_control_plane(
    org: Org, operator: OperatorProcess, kube: Client, namespace: str
) -> None:
    found = executor(org)
    assert found is not None and found["kind"] == "operator"
    litecoin = next(c for c in found["capabilities"]["chains"] if c["chain"] == "litecoin")
    assert VERSION in litecoin["roles"][0]["clients"][0]["versions"]

    node_id = deploy(org, "ltc-a", overrides={"files": {"node": {"maxconnections": 12}}})
    bn = wait_until(lambda: exists(kube, BlockchainNode, "ltc-a", namespace), 30, what="the BN")
    assert bn.spec["nodeId"] == node_id and bn.spec["revision"] == 1
    config = wait_until(
        lambda: exists(kube, ConfigMap, config_map_name("ltc-a"), namespace), 30, what="the cm"
    )
    assert "maxconnections=12" in next(iter(config.data.values()))
    # The controller applies the StatefulSet after the ConfigMap and Services (what its pod
    # mounts comes first): on a busy machine it may not be there yet.
    sts = wait_until(
        lambda: exists(kube, StatefulSet, "ltc-a", namespace), 30, what="the StatefulSet"
    )
    container, sidecar = sts.spec.template.spec.containers
    assert container.image == f"docker.io/uphold/litecoin-core:{VERSION}"
    assert (sidecar.name, sidecar.image) == (PROBE_CONTAINER, OPERATOR_IMAGE)
    assert sts.spec.replicas == 1
    assert kube.get(Service, "ltc-a", namespace=namespace).spec.clusterIP == "None"

    pod_running(kube, namespace, "ltc-a")
    wait_phase(org, node_id, "RUNNING", revision=1)
    status = subprocess.run(
        [sys.executable, "-m", "nodeplane", "operator", "status", "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(operator.kubeconfig), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"leader {operator.instance_id()}" in status
    (row,) = [line for line in status.splitlines() if "ltc-a" in line]
    assert "Running" in row and "running" in row

    stop = lifecycle(org, node_id, "STOP")
    wait_phase(org, node_id, "STOPPED", revision=stop)
    assert kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.replicas == 0
    assert claims(kube, namespace, "ltc-a") == ["data-ltc-a-0"]

    start = lifecycle(org, node_id, "START")
    wait_until(
        lambda: kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.replicas == 1,
        30,
        what="scaled to 1",
    )
    pod_running(kube, namespace, "ltc-a")
    wait_phase(org, node_id, "RUNNING", revision=start)

    restart = lifecycle(org, node_id, "RESTART")
    wait_until(
        lambda: (
            kube.get(StatefulSet, "ltc-a", namespace=namespace).spec.template.metadata.annotations[
                RESTART_ANNOTATION
            ]
            == "1"
        ),
        30,
        what="the restart annotation",
    )
    wait_until(
        lambda: (n := node(org, node_id)) and n["observedRevision"] == restart, 30, what="restart"
    )

    delete(org, node_id, retain_data=True)
    wait_until(lambda: node(org, node_id) is None, 60, what="the node gone")
    assert children_gone(kube, namespace, "ltc-a")
    assert claims(kube, namespace, "ltc-a") == ["data-ltc-a-0"]

    dropped = deploy(org, "ltc-b")
    wait_until(lambda: claims(kube, namespace, "ltc-b"), 30, what="ltc-b's claim")
    delete(org, dropped, retain_data=False)
    wait_until(lambda: node(org, dropped) is None, 60, what="ltc-b gone")
    assert children_gone(kube, namespace, "ltc-b")
    assert claims(kube, namespace, "ltc-b") == []


def test_a_crash_loop_is_an_error_with_its_reason(
    org: Org, operator: OperatorProcess, kube: Client, namespace: str
) -> None:
    node_id = deploy(org, "ltc-crash")
    wait_until(lambda: exists(kube, Pod, "ltc-crash-0", namespace), 30, what="the pod")
    set_pod_status(
        kube,
        namespace,
        "ltc-crash-0",
        {"node": waiting_state("CrashLoopBackOff", "back-off 20s restarting failed", restarts=2)},
    )
    failed = wait_phase(org, node_id, "ERROR")
    (process,) = failed["observed"]["processes"]
    assert process["status"] == "error"
    assert "CrashLoopBackOff" in process["message"]
    assert "back-off 20s restarting failed" in process["message"]


def versions(kube: Client, namespace: str, objects: list[tuple[str, str]]) -> dict[str, str]:
    return {
        f"{kind}/{name}": kube.get(KINDS[kind], name, namespace=namespace).metadata.resourceVersion
        for kind, name in objects
    }


def config_text(kube: Client, namespace: str, name: str) -> str:
    data = kube.get(ConfigMap, config_map_name(name), namespace=namespace).data or {}
    return "".join(data.values())


def holder(kube: Client, namespace: str) -> str | None:
    lease = exists(kube, Lease, "nodeplane-operator", namespace)
    return lease.spec.holderIdentity if lease is not None and lease.spec else None


def test_two_replicas_one_leader_and_a_takeover_mid_apply_converges(
    server: ServerProcess,
    org: Org,
    kube_cluster: KubeTestCluster,
    kube: Client,
    namespace: str,
    tmp_path: Path,
) -> None:
    key = org.executor_key()
    first = replica(server, key, kube_cluster, namespace, tmp_path / "first")
    second = replica(server, key, kube_cluster, namespace, tmp_path / "second")
    first.start()
    try:
        wait_until(lambda: executor(org), 60, what=f"the operator online\n{first.log()}")
        second.start()
        wait_until(lambda: second.instance_id(), 30, what="the second replica started")
        leader_id = holder(kube, namespace)
        assert leader_id == first.instance_id()

        a = deploy(org, "ltc-a")
        b = deploy(org, "ltc-b")
        for name, node_id in (("ltc-a", a), ("ltc-b", b)):
            pod_running(kube, namespace, name)
            wait_phase(org, node_id, "RUNNING", revision=1)
        # The follower only waits: it never acted.
        assert not second.logged("leader.acquired")
        assert not second.logged("controller.starting")
        watched = [
            (kind, name)
            for node_name in ("ltc-a", "ltc-b")
            for kind, name in (
                ("BlockchainNode", node_name),
                ("ConfigMap", config_map_name(node_name)),
                ("StatefulSet", node_name),
                ("Service", node_name),
            )
        ]
        wait_until(
            lambda: all(
                (sts := kube.get(StatefulSet, n, namespace=namespace)).status
                and sts.status.observedGeneration == sts.metadata.generation
                for n in ("ltc-a", "ltc-b")
            ),
            30,
            what="settled StatefulSets",
        )
        before = versions(kube, namespace, watched)
        import json as _json  # DEBUG

        snap = {
            f"{k}/{n}": kube.get(KINDS[k], n, namespace=namespace).to_dict() for k, n in watched
        }

        # The leader dies mid-apply: it had applied ltc-a's new revision to its BlockchainNode
        # (as the backend does first) but had rendered none of its children.
        first.kill()
        revision = org.owner(
            "mutation($input: UpdateNodeInput!) { updateNode(input: $input) { revision } }",
            {"input": {"nodeId": a, "overrides": {"files": {"node": {"maxconnections": 7}}}}},
        )["updateNode"]["revision"]
        live = kube.get(BlockchainNode, "ltc-a", namespace=namespace)
        spec = {**live.spec, "revision": revision}
        spec["overrides"] = {"files": {"node": {"maxconnections": 7}}}
        half_applied = stamped(blockchain_node_body(node_resource_of("ltc-a", spec), namespace))
        kube.apply(from_dict(half_applied), field_manager=FIELD_MANAGER, force=True)

        # The follower takes the Lease over once it expires, and converges.
        wait_until(
            lambda: holder(kube, namespace) == second.instance_id(),
            30,
            what=f"the follower to lead\n{second.log()}",
        )
        wait_until(
            lambda: "maxconnections=7" in config_text(kube, namespace, "ltc-a"),
            60,
            what="ltc-a's new config rendered",
        )
        wait_until(
            lambda: (n := node(org, a)) and n["observedRevision"] == revision,
            60,
            what=f"revision {revision} observed\n{second.log()}",
        )
        wait_until(lambda: executor(org), 30, what="the executor online with the new leader")
        after = versions(kube, namespace, watched)
        changed = {k for k in before if before[k] != after[k]}
        snap2 = {
            f"{k}/{n}": kube.get(KINDS[k], n, namespace=namespace).to_dict() for k, n in watched
        }
        for k in changed:
            Path(f"/tmp/np-debug-{k.replace('/', '_')}.json").write_text(
                _json.dumps([snap[k], snap2[k]], indent=1, default=str)
            )
        # ltc-a's BlockchainNode (new spec, status), ConfigMap and StatefulSet (config hash)
        # changed; its Service and everything of ltc-b were left as they were.
        assert changed <= {
            "BlockchainNode/ltc-a",
            f"ConfigMap/{config_map_name('ltc-a')}",
            "StatefulSet/ltc-a",
        }, changed
        assert {f"ConfigMap/{config_map_name('ltc-a')}", "StatefulSet/ltc-a"} <= changed
    finally:
        first.stop()
        second.stop()


def test_a_leader_that_loses_its_lease_exits(
    operator: OperatorProcess, kube: Client, namespace: str
) -> None:
    lease = kube.get(Lease, "nodeplane-operator", namespace=namespace)
    assert lease.spec.holderIdentity == operator.instance_id()
    lease.spec.holderIdentity = "another-replica"
    kube.replace(lease)
    wait_until(lambda: not operator.running(), 30, what="the operator to exit")
    assert operator.popen is not None and operator.popen.returncode == 1
    assert "lost the lease" in operator.log()


@pytest.mark.chain
@pytest.mark.process
def test_heights_reach_the_control_plane_through_the_probe_sidecar(
    org: Org, operator: OperatorProcess, kube: Client, namespace: str, tmp_path: Path
) -> None:
    """The rendered pod run for real (tests/operator/kubelet.py): litecoind regtest and the probe
    sidecar; the operator process reads the sidecar and the control plane shows the height."""
    ensure_chain_clients()
    node_id = deploy(org, "ltc-h")
    wait_until(lambda: exists(kube, Pod, "ltc-h-0", namespace), 30, what="the pod")

    def process() -> dict[str, Any]:
        observed = (node(org, node_id) or {}).get("observed") or {}
        found: dict[str, Any] = (observed.get("processes") or [{}])[0]
        return found

    with LocalKubelet(kube, namespace, "ltc-h-0", tmp_path / "pod") as kubelet:
        wait_phase(org, node_id, "RUNNING", revision=1)
        # The sidecar is read at once and then every 10 s (the operator's probe refresh).
        seen = wait_until(lambda: process().get("height") == 0 and process(), 60, what="height 0")
        assert seen["status"] == "running" and seen["peers"] == 0
        kubelet.exec(
            "node",
            [
                "litecoin-cli",
                "-datadir=/node/data",
                "-conf=/node/config/litecoin.conf",
                "generatetodescriptor",
                "3",
                "raw(51)",
            ],
        )
        wait_until(lambda: process().get("height") == 3, 60, what="the mined height")
        assert (node(org, node_id) or {}).get("phase") == "RUNNING"
