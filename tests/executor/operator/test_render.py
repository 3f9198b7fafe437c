"""The renderer: a node and its chain adapter in, Kubernetes objects out (pure, no cluster)."""

import uuid
from typing import Any

import pytest

from nodeplane.chains.base import UnsupportedNodeSpec
from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum.adapter import ETHEREUM
from nodeplane.executor.operator.images import DEFAULT_IMAGES
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

NODE_ID = uuid.UUID("2f1c8a34-57c4-4a70-9d55-0d8f3c3b2a10")
OWNER = Owner(name="ltc-1", uid="6b1f0f0e-0000-4000-8000-000000000001")

LITECOIN_SPEC: dict[str, Any] = {
    "chain": "litecoin",
    "network": "regtest",
    "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
}
ETHEREUM_SPEC: dict[str, Any] = {
    "chain": "ethereum",
    "network": "sepolia",
    "clients": {
        "execution": {"name": "geth", "version": "1.14.12"},
        "consensus": {"name": "lighthouse", "version": "5.3.0"},
    },
}


def node(spec: dict[str, Any], name: str = "ltc-1", revision: int = 3) -> NodeResource:
    return NodeResource(NODE_ID, name, revision, NodeSpec.model_validate(spec))


def litecoin(**changes: Any) -> dict[str, Any]:
    return {**LITECOIN_SPEC, **changes}


def pod_spec(rendered: Any) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.stateful_set["spec"]["template"]["spec"]
    return spec


def test_litecoin_node_renders_config_map_stateful_set_and_headless_service() -> None:
    r = render_node(node(litecoin()), LITECOIN, OWNER, "nodes")
    assert [o["kind"] for o in r.objects()] == ["ConfigMap", "Service", "StatefulSet"]
    assert r.public_service is None

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


@pytest.mark.parametrize(
    ("service_type", "public"),
    [("ClusterIP", None), ("NodePort", "NodePort"), ("LoadBalancer", "LoadBalancer")],
)
def test_public_service_only_when_the_spec_asks(service_type: str, public: str | None) -> None:
    r = render_node(node(litecoin(operator={"serviceType": service_type})), LITECOIN, OWNER, "ns")
    if public is None:
        assert r.public_service is None
        return
    assert r.public_service is not None
    assert r.public_service["metadata"]["name"] == "ltc-1-public"
    assert r.public_service["spec"]["type"] == public
    # Only the public (P2P) port: RPC is never exposed.
    assert [p["name"] for p in r.public_service["spec"]["ports"]] == ["node-p2p"]


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
    # The label keeps the node's full name: it is what selects the node's objects.
    assert r.stateful_set["spec"]["selector"]["matchLabels"]["nodeplane.dev/node"] == name


@pytest.mark.parametrize(
    ("role", "name", "expected"),
    [("node", "p2p", "node-p2p"), ("execution", "metrics", "executi-metrics")],
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
