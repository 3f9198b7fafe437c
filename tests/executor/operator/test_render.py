"""The renderer: a node and its chain adapter in, Kubernetes objects out (pure, no cluster)."""

import uuid
from typing import Any

import pytest

from nodeplane.chains.base import UnsupportedNodeSpec
from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum.adapter import ETHEREUM
from nodeplane.executor.operator.images import DEFAULT_IMAGES, NODE_GROUP, NODE_USER
from nodeplane.executor.operator.probe import PLAN_FILE, parse_plan
from nodeplane.executor.operator.render import (
    CONFIG_HASH_ANNOTATION,
    PROBE_CONTAINER,
    PROBE_RESOURCES,
    RESTART_ANNOTATION,
    Owner,
    ProbeSidecar,
    RenderError,
    child_name,
    config_hash,
    port_name,
    render_node,
)
from nodeplane.executor.operator.resource import NodeResource
from nodeplane.protocol import NodeSpec
from tests.support.fleet import ETHEREUM_SPEC, LITECOIN_SPEC

NODE_ID = uuid.UUID("2f1c8a34-57c4-4a70-9d55-0d8f3c3b2a10")
OWNER = Owner(name="ltc-1", uid="6b1f0f0e-0000-4000-8000-000000000001")


def node(spec: dict[str, Any], name: str = "ltc-1", revision: int = 3) -> NodeResource:
    return NodeResource(NODE_ID, name, revision, NodeSpec.model_validate(spec))


def litecoin(**changes: Any) -> dict[str, Any]:
    return {**LITECOIN_SPEC, **changes}


def client_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's containers that run the node's roles (every one but the probe sidecar)."""
    return [c for c in pod["containers"] if c["name"] != PROBE_CONTAINER]


def pod_spec(rendered: Any) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.stateful_set["spec"]["template"]["spec"]
    return spec


def test_litecoin_node_renders_config_map_stateful_set_and_services() -> None:
    r = render_node(node(litecoin()), LITECOIN, OWNER, "nodes")
    assert [o["kind"] for o in r.objects()] == ["ConfigMap", "Service", "Service", "StatefulSet"]
    # The default type: a ClusterIP Service of the P2P port beside the headless one.
    assert r.public_service is not None
    assert r.public_service["spec"]["type"] == "ClusterIP"

    assert r.config_map["metadata"]["name"] == "ltc-1-config"
    conf = r.config_map["data"]["litecoin.conf"]
    assert "regtest=1" in conf

    sts = r.stateful_set
    assert sts["metadata"]["name"] == "ltc-1"
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == "ltc-1"
    assert sts["spec"]["selector"] == {"matchLabels": {"nodeplane.dev/node": "ltc-1"}}
    container, sidecar = pod_spec(r)["containers"]
    assert container["name"] == "node" and sidecar["name"] == PROBE_CONTAINER
    assert container["image"] == "docker.io/uphold/litecoin-core:0.21.4"
    assert container["command"][:3] == [
        "litecoind",
        "-datadir=/node/data",
        "-conf=/node/config/litecoin.conf",
    ]
    assert {
        "name": "config-files",
        "mountPath": "/node/config/litecoin.conf",
        "subPath": "litecoin.conf",
        "readOnly": True,
    } in container["volumeMounts"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "node-rpc": 19443,
        "node-p2p": 19444,
        "node-onion": 19445,
    }
    # Startup and liveness check the public port (Kubernetes cannot reach the loopback RPC);
    # readiness asks the probe sidecar whether the role answers RPC.
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "node-p2p"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready/node", "port": 9797}
    # Adapter defaults when the spec gives no resources; no limit unless the spec sets one.
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}
    # The client's stop timeout (litecoind flushes its cache) is the grace period.
    assert pod_spec(r)["terminationGracePeriodSeconds"] == 600

    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert "storageClassName" not in claim["spec"]

    svc = r.headless_service
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == {"nodeplane.dev/node": "ltc-1"}


def test_every_object_is_labelled_and_owned_by_the_blockchain_node() -> None:
    r = render_node(node(litecoin(operator={"serviceType": "LoadBalancer"})), LITECOIN, OWNER, "ns")
    assert len(r.objects()) == 4
    for obj in r.objects():
        meta = obj["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["labels"]["nodeplane.dev/node"] == "ltc-1"
        # No revision stamp: a revision that changes nothing here must not touch the object.
        assert "annotations" not in meta
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "nodeplane.dev/v1alpha1",
                "kind": "BlockchainNode",
                "name": "ltc-1",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    template_labels = r.stateful_set["spec"]["template"]["metadata"]["labels"]
    assert template_labels["nodeplane.dev/node"] == "ltc-1"


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_the_public_ports_service_has_the_type_the_spec_asks(service_type: str) -> None:
    r = render_node(node(litecoin(operator={"serviceType": service_type})), LITECOIN, OWNER, "ns")
    assert r.public_service is not None
    assert r.public_service["metadata"]["name"] == "ltc-1-public"
    assert r.public_service["spec"]["type"] == service_type
    # Only the public (P2P) port: RPC is never exposed.
    assert [p["name"] for p in r.public_service["spec"]["ports"]] == ["node-p2p"]
    # Beside the headless Service of every port, which is always there.
    assert r.headless_service["spec"]["clusterIP"] == "None"
    assert [o["kind"] for o in r.objects()] == ["ConfigMap", "Service", "Service", "StatefulSet"]


def test_a_node_without_public_ports_has_no_public_service() -> None:
    devnet = {
        "chain": "ethereum",
        "network": "devnet",
        "clients": {"execution": {"name": "anvil", "version": "1.0.0"}},
        "operator": {"serviceType": "LoadBalancer"},
    }
    r = render_node(node(devnet, "dev"), ETHEREUM, OWNER, "ns")
    assert r.public_service is None
    assert [p["name"] for p in r.headless_service["spec"]["ports"]] == ["execution-http"]


@pytest.mark.parametrize(("desired", "replicas"), [("running", 1), ("stopped", 0)])
def test_desired_state_sets_replicas(desired: str, replicas: int) -> None:
    r = render_node(node(litecoin(desiredState=desired)), LITECOIN, OWNER, "ns")
    assert r.stateful_set["spec"]["replicas"] == replicas


def test_restart_generation_changes_only_the_pod_template_annotation() -> None:
    before = render_node(node(litecoin(restartGeneration=4)), LITECOIN, OWNER, "ns")
    after = render_node(node(litecoin(restartGeneration=5)), LITECOIN, OWNER, "ns")
    annotations = after.stateful_set["spec"]["template"]["metadata"]["annotations"]
    assert annotations[RESTART_ANNOTATION] == "5"
    before.stateful_set["spec"]["template"]["metadata"]["annotations"][RESTART_ANNOTATION] = "5"
    assert before == after


def test_a_revision_that_changes_nothing_renders_the_same_objects() -> None:
    assert render_node(node(litecoin(), revision=3), LITECOIN, OWNER, "ns") == render_node(
        node(litecoin(), revision=4), LITECOIN, OWNER, "ns"
    )


def test_desired_state_and_revision_do_not_touch_the_pod_template() -> None:
    # A stop, or a revision that changes nothing in the pod, must not roll the pod.
    running = render_node(node(litecoin(), revision=3), LITECOIN, OWNER, "ns")
    stopped = render_node(node(litecoin(desiredState="stopped"), revision=4), LITECOIN, OWNER, "ns")
    assert running.stateful_set["spec"]["template"] == stopped.stateful_set["spec"]["template"]


def test_a_changed_config_file_changes_the_pod_template_hash() -> None:
    plain = render_node(node(litecoin()), LITECOIN, OWNER, "ns")
    tuned = render_node(
        node(litecoin(overrides={"files": {"node": {"dbcache": 1024}}})), LITECOIN, OWNER, "ns"
    )
    assert "dbcache=1024" in tuned.config_map["data"]["litecoin.conf"]
    key = CONFIG_HASH_ANNOTATION
    assert (
        plain.stateful_set["spec"]["template"]["metadata"]["annotations"][key]
        != tuned.stateful_set["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_rendering_is_deterministic() -> None:
    spec = {**ETHEREUM_SPEC, "resources": {"cpuRequest": "3"}}
    assert render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns") == render_node(
        node(spec, "eth"), ETHEREUM, OWNER, "ns"
    )


def test_storage_size_and_class_make_the_claim_template() -> None:
    spec = litecoin(storage={"size": "20Gi", "storageClass": "fast-ssd"})
    (claim,) = render_node(node(spec), LITECOIN, OWNER, "ns").stateful_set["spec"][
        "volumeClaimTemplates"
    ]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "fast-ssd",
    }
    assert claim["metadata"]["labels"]["nodeplane.dev/node"] == "ltc-1"


def test_ethereum_node_has_two_containers_sharing_one_jwt_secret() -> None:
    r = render_node(node(ETHEREUM_SPEC, "eth-1"), ETHEREUM, OWNER, "ns")
    pod = pod_spec(r)
    assert [c["name"] for c in pod["containers"]] == ["execution", "consensus", PROBE_CONTAINER]
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["init-directories", "init-jwt-secret"]
    assert "/node/data/execution" in init["init-directories"]["command"]
    jwt = init["init-jwt-secret"]["command"]
    assert jwt[:2] == ["sh", "-c"] and jwt[-2:] == ["/node/config/jwt.hex", "32"]
    execution, consensus, _ = pod["containers"]
    assert "--authrpc.jwtsecret=/node/config/jwt.hex" in execution["command"]
    assert "--execution-jwt=/node/config/jwt.hex" in consensus["command"]
    # Both read it from the pod's shared config directory, which the init container wrote.
    for c in (execution, consensus, init["init-jwt-secret"]):
        assert {"name": "config", "mountPath": "/node/config"} in c["volumeMounts"]
    assert {"name": "config", "emptyDir": {}} in pod["volumes"]
    # The longest stop timeout of the pod's clients (geth: 300 s).
    assert pod["terminationGracePeriodSeconds"] == 300
    # Ports are distinct in the shared network namespace, names fit Kubernetes' 15 characters.
    names = [p["name"] for c in pod["containers"] for p in c["ports"]]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)


def test_node_resources_are_split_between_containers() -> None:
    spec = {
        **ETHEREUM_SPEC,
        "resources": {
            "cpuRequest": "3",
            "cpuLimit": "4",
            "memoryRequest": "8Gi",
            "memoryLimit": "9Gi",
        },
    }
    pod = pod_spec(render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns"))
    # The node's resources go to its clients; the probe sidecar has its own small share.
    for container in pod["containers"][:-1]:
        assert container["resources"] == {
            "requests": {"cpu": "1500m", "memory": str(4 * 2**30)},
            "limits": {"cpu": "2000m", "memory": str(9 * 2**30 // 2)},
        }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ltc-1", "ltc-1"),
        ("a" * 52, "a" * 52),
        ("a" * 53, None),
        ("1node", None),  # a Service name must start with a letter
    ],
)
def test_child_name_fits_statefulset_and_service_rules(name: str, expected: str | None) -> None:
    got = child_name(name)
    if expected is not None:
        assert got == expected
        return
    assert got.startswith("bn-") and len(got) <= 52
    assert got[-1].isalnum() and "--" not in got.replace(got[-9:], "")
    assert child_name(name) == got  # stable
    assert child_name(name + "x") != got


def test_long_node_name_renders_valid_object_names() -> None:
    name = "n" * 63
    r = render_node(node(litecoin(), name=name), LITECOIN, OWNER, "ns")
    assert len(r.stateful_set["metadata"]["name"]) <= 52
    assert len(r.config_map["metadata"]["name"]) <= 63
    lb = {**ETHEREUM_SPEC, "operator": {"serviceType": "LoadBalancer"}}
    services = render_node(node(lb, name=name), ETHEREUM, OWNER, "ns")
    assert services.public_service is not None and services.public_udp_service is not None
    for service in (services.public_service, services.public_udp_service):
        assert len(service["metadata"]["name"]) <= 63  # a Service name's limit
    # The label keeps the node's full name: it is what selects the node's objects.
    assert r.stateful_set["spec"]["selector"]["matchLabels"]["nodeplane.dev/node"] == name


@pytest.mark.parametrize(
    ("role", "name", "expected"),
    [
        ("node", "p2p", "node-p2p"),
        ("execution", "metrics", "executi-metrics"),
        ("execution", "p2p_alt", "executi-p2p-alt"),  # `_` is not allowed in a port name
    ],
)
def test_port_names_fit(role: str, name: str, expected: str) -> None:
    assert port_name(role, name) == expected


def test_a_client_without_an_image_is_a_render_error() -> None:
    images = {k: v for k, v in DEFAULT_IMAGES.items() if k != "litecoind"}
    with pytest.raises(RenderError, match="litecoind"):
        render_node(node(litecoin()), LITECOIN, OWNER, "ns", images=images)


def test_the_adapter_refuses_what_it_cannot_run() -> None:
    with pytest.raises(UnsupportedNodeSpec):
        render_node(node(litecoin(network="testnet-x")), LITECOIN, OWNER, "ns")


EXECUTION_CLIENTS = ("geth", "reth", "erigon", "nethermind")
CONSENSUS_CLIENTS = ("lighthouse", "prysm", "lodestar")


@pytest.mark.parametrize("execution", EXECUTION_CLIENTS)
@pytest.mark.parametrize("consensus", CONSENSUS_CLIENTS)
def test_every_ethereum_pair_renders_unique_port_names_with_udp(
    execution: str, consensus: str
) -> None:
    spec = {
        **ETHEREUM_SPEC,
        "clients": {
            "execution": {"name": execution, "version": "1.0.0"},
            "consensus": {"name": consensus, "version": "1.0.0"},
        },
    }
    r = render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns")
    ports = [p for c in client_containers(pod_spec(r)) for p in c["ports"]]
    names = [p["name"] for p in ports]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)
    numbers = [(p["containerPort"], p["protocol"]) for p in ports]
    assert len(set(numbers)) == len(numbers)
    # Both P2P listeners discover peers over UDP on their own number.
    for p2p in (30303, 9000):
        assert {
            (p["containerPort"], p["protocol"]) for p in ports if p["containerPort"] == p2p
        } == {
            (p2p, "TCP"),
            (p2p, "UDP"),
        }
    # The headless Service names every container port, same name, number and protocol.
    service = {(p["name"], p["port"], p["protocol"]) for p in r.headless_service["spec"]["ports"]}
    assert service == {(p["name"], p["containerPort"], p["protocol"]) for p in ports}


def test_udp_only_ports_and_the_probes_of_a_tcp_and_udp_port() -> None:
    """Lighthouse's QUIC port is UDP alone; a port probe only ever checks a TCP port (readiness
    asks the probe sidecar)."""
    spec = {**ETHEREUM_SPEC, "operator": {"serviceType": "NodePort"}}
    r = render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns")
    execution, consensus = client_containers(pod_spec(r))
    quic = [p for p in consensus["ports"] if p["containerPort"] == 9001]
    assert quic == [{"name": "consensus-quic", "containerPort": 9001, "protocol": "UDP"}]
    tcp_names = {
        p["name"] for c in (execution, consensus) for p in c["ports"] if p["protocol"] == "TCP"
    }
    for container in (execution, consensus):
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["tcpSocket"]["port"] in tcp_names
        assert container["readinessProbe"]["httpGet"]["path"] == f"/ready/{container['name']}"
    assert execution["livenessProbe"]["tcpSocket"]["port"] == "execution-p2p"
    assert r.public_service is not None
    public = {(p["name"], p["port"], p["protocol"]) for p in r.public_service["spec"]["ports"]}
    assert public == {
        ("execution-p2p", 30303, "TCP"),
        ("executi-p2p-udp", 30303, "UDP"),
        ("consensus-p2p", 9000, "TCP"),
        ("consens-p2p-udp", 9000, "UDP"),
        ("consensus-quic", 9001, "UDP"),
    }
    # NodePort (and ClusterIP) Services may mix protocols: no second one.
    assert r.public_udp_service is None


ETHEREUM_PUBLIC_TCP = {("execution-p2p", 30303, "TCP"), ("consensus-p2p", 9000, "TCP")}
ETHEREUM_PUBLIC_UDP = {
    ("executi-p2p-udp", 30303, "UDP"),
    ("consens-p2p-udp", 9000, "UDP"),
    ("consensus-quic", 9001, "UDP"),
}


def service_ports(service: dict[str, Any] | None) -> set[tuple[str, int, str]]:
    assert service is not None
    return {(p["name"], p["port"], p["protocol"]) for p in service["spec"]["ports"]}


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort"])
def test_one_public_service_mixes_protocols_unless_load_balancer(service_type: str) -> None:
    spec = {**ETHEREUM_SPEC, "operator": {"serviceType": service_type}}
    r = render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns")
    assert service_ports(r.public_service) == ETHEREUM_PUBLIC_TCP | ETHEREUM_PUBLIC_UDP
    assert r.public_udp_service is None
    assert [o["metadata"]["name"] for o in r.objects()] == [
        "eth-config",
        "eth",
        "eth-public",
        "eth",
    ]


def test_a_load_balancer_puts_the_udp_ports_in_a_service_of_their_own() -> None:
    """An API server before 1.24 refuses to create a LoadBalancer of TCP and UDP ports."""
    spec = {**ETHEREUM_SPEC, "operator": {"serviceType": "LoadBalancer"}}
    r = render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns")
    tcp, udp = r.public_service, r.public_udp_service
    assert tcp is not None and udp is not None
    assert tcp["metadata"]["name"] == "eth-public"
    assert udp["metadata"]["name"] == "eth-public-udp"
    assert service_ports(tcp) == ETHEREUM_PUBLIC_TCP
    assert service_ports(udp) == ETHEREUM_PUBLIC_UDP
    # The same pod behind both, with the same labels and owner, and of the same type.
    assert udp["spec"]["selector"] == tcp["spec"]["selector"] == {"nodeplane.dev/node": "eth"}
    assert udp["spec"]["type"] == tcp["spec"]["type"] == "LoadBalancer"
    for key in ("labels", "ownerReferences", "namespace"):
        assert udp["metadata"][key] == tcp["metadata"][key]
    # Both Services after the headless one, and before the pods that they route to.
    assert [(o["kind"], o["metadata"]["name"]) for o in r.objects()] == [
        ("ConfigMap", "eth-config"),
        ("Service", "eth"),
        ("Service", "eth-public"),
        ("Service", "eth-public-udp"),
        ("StatefulSet", "eth"),
    ]


def test_a_load_balancer_of_tcp_ports_alone_is_one_service() -> None:
    r = render_node(node(litecoin(operator={"serviceType": "LoadBalancer"})), LITECOIN, OWNER, "ns")
    assert service_ports(r.public_service) == {("node-p2p", 19444, "TCP")}
    assert r.public_udp_service is None


LOCKED_DOWN = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_pods_run_non_root_with_the_volume_owned_by_their_group() -> None:
    pod = pod_spec(render_node(node(ETHEREUM_SPEC, "eth"), ETHEREUM, OWNER, "ns"))
    assert pod["securityContext"] == {
        "fsGroup": NODE_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
        "runAsNonRoot": True,
    }
    for container in (*pod["initContainers"], *pod["containers"]):
        assert container["securityContext"] == {
            **LOCKED_DOWN,
            "runAsUser": NODE_USER,
            "runAsGroup": NODE_GROUP,
            "runAsNonRoot": True,
            # The sidecar writes nothing; the clients write their own files under /node.
            **({"readOnlyRootFilesystem": True} if container["name"] == PROBE_CONTAINER else {}),
        }
    # The role directories are group-writable, for a client whose user differs from mkdir's.
    (directories, _) = pod["initContainers"]
    assert directories["command"][:5] == ["mkdir", "-p", "-m", "2775", "--"]


def test_an_image_with_its_own_user_or_needing_root_keeps_it() -> None:
    """Erigon's image has a non-root user of its own (1000); Nethermind's default image writes
    into its root-owned install directory, so it runs as root, and the pod cannot insist on
    non-root, yet still without capabilities or privilege escalation."""
    spec = {
        **ETHEREUM_SPEC,
        "clients": {
            "execution": {"name": "erigon", "version": "2.60.10"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
    }
    pod = pod_spec(render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns"))
    erigon, _, sidecar = pod["containers"]
    assert erigon["securityContext"]["runAsUser"] == 1000
    # The sidecar runs as the first client's user: it can read what that client wrote mode 0600.
    assert sidecar["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    spec["clients"]["execution"] = {"name": "nethermind", "version": "1.29.1"}  # type: ignore[index]
    pod = pod_spec(render_node(node(spec, "eth"), ETHEREUM, OWNER, "ns"))
    nethermind, lighthouse, sidecar = pod["containers"]
    assert nethermind["securityContext"] == LOCKED_DOWN
    assert lighthouse["securityContext"]["runAsUser"] == NODE_USER
    assert sidecar["securityContext"]["runAsUser"] == NODE_USER
    assert "runAsNonRoot" not in pod["securityContext"]
    assert pod["securityContext"]["fsGroup"] == NODE_GROUP


def test_the_probe_sidecar_reads_the_plan_from_the_config_map_and_mounts_data_read_only() -> None:
    r = render_node(
        node(litecoin()), LITECOIN, OWNER, "ns", sidecar=ProbeSidecar("registry.example/np:1", 9811)
    )
    sidecar = pod_spec(r)["containers"][-1]
    assert sidecar["image"] == "registry.example/np:1"
    assert sidecar["command"] == [
        "nodeplane",
        "operator",
        "probe",
        "--plan",
        f"/node/config/{PLAN_FILE}",
        "--listen",
        "0.0.0.0:9811",
    ]
    assert sidecar["ports"] == [{"name": "probe", "containerPort": 9811, "protocol": "TCP"}]
    assert sidecar["resources"] == PROBE_RESOURCES
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    assert mounts["/node/data"]["readOnly"] and mounts["/node/config"]["readOnly"]
    assert mounts[f"/node/config/{PLAN_FILE}"]["subPath"] == PLAN_FILE
    # The plan the ConfigMap holds is what the sidecar parses: the role's RPC and cookie.
    plan = parse_plan(r.config_map["data"][PLAN_FILE])
    (process,) = plan.processes
    assert plan.chain == "litecoin" and process.role == "node" and process.network == "regtest"
    assert process.rpc is not None and process.rpc.url == "http://127.0.0.1:19443/"
    assert str(process.rpc.cookie_file) == "/node/data/regtest/.cookie"
    # The client container's readiness asks the sidecar on its port.
    assert pod_spec(r)["containers"][0]["readinessProbe"]["httpGet"]["port"] == 9811


def test_a_client_port_on_the_sidecar_port_is_refused() -> None:
    with pytest.raises(RenderError, match="probe sidecar"):
        render_node(node(litecoin()), LITECOIN, OWNER, "ns", sidecar=ProbeSidecar(port=19444))


def test_a_new_probe_plan_rolls_the_pod_through_the_config_hash() -> None:
    # The sidecar reads its plan once: a changed plan (another RPC port) must restart the pod.
    plain = render_node(node(litecoin()), LITECOIN, OWNER, "ns")
    digest = plain.stateful_set["spec"]["template"]["metadata"]["annotations"]
    data = dict(plain.config_map["data"])
    data[PLAN_FILE] = data[PLAN_FILE].replace("19443", "19450")
    assert config_hash(data) != digest[CONFIG_HASH_ANNOTATION]
    assert config_hash(plain.config_map["data"]) == digest[CONFIG_HASH_ANNOTATION]
