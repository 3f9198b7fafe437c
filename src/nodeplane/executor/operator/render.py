"""Render one BlockchainNode into the Kubernetes objects that run it: pure functions, no I/O.

From a node (NodeSpec, name, revision) and its chain adapter: a ConfigMap with the client config
files and the probe plan, a StatefulSet of one replica (one container per role plus the probe
sidecar, init containers for one-time steps, a volume claim template for the data), a headless
Service of every port (stable DNS for the pod), and a Service of the spec's type
(`operator.serviceType`: ClusterIP, the default, NodePort or LoadBalancer) for the public (P2P)
ports, when the node has any; a LoadBalancer is two, the TCP ports' and the UDP ports', since an
API server before 1.24 refuses to create a LoadBalancer that mixes them. Every object is labelled
`nodeplane.dev/node=<name>` and owned by the BlockchainNode, so deleting it cascades (the PVCs
made from the claim template are not owned, so they outlive the node unless deleted on purpose).

In the pod the node's directory is `/node`: `/node/data` is the volume, `/node/config` a directory
shared by the pod's containers (the JWT secret goes there) with each config file mounted into it
from the ConfigMap. The containers share one network namespace, so each port keeps the adapter's
default number; RPC stays on loopback, as the adapters render it, and the probe sidecar
(`nodeplane operator probe`, probe.py) asks it there and serves what it saw to the controller and
to each client container's readiness probe.

What the spec changes and the pod template does not show is stamped on the pod template: the
restart generation (a bump is a rollout restart) and a hash of the config files (a changed file
rolls the pod, since files mounted by subPath are never updated in place).
"""

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from nodeplane.chains.base import (
    ChainAdapter,
    InitStep,
    NodeConfigError,
    NodeLayout,
    NodePlan,
    PortDef,
    ProcessPlan,
    Protocol,
    RenderContext,
)
from nodeplane.executor.operator.crd import API_VERSION, FIELD_MANAGER, GROUP, KIND, NODE_LABEL
from nodeplane.executor.operator.images import (
    DEFAULT_IMAGES,
    NODE_GROUP,
    NODE_USER,
    OPERATOR_IMAGE,
    PROBE_PORT_DEFAULT,
    UTILITY_IMAGE,
    ClientImage,
)
from nodeplane.executor.operator.probe import PLAN_FILE, plan_json
from nodeplane.executor.operator.resource import NodeResource
from nodeplane.protocol.enums import DesiredState, ServiceType
from nodeplane.protocol.quantities import quantity_value

NODE_ROOT = PurePosixPath("/node")
DATA_VOLUME = "data"
CONFIG_VOLUME = "config"
CONFIG_FILES_VOLUME = "config-files"
# A StatefulSet's pods carry the label `controller-revision-hash: <name>-<hash>` (up to 63
# characters, hash up to 10), so its name must stay within 52.
MAX_STATEFULSET_NAME = 52
RESTART_ANNOTATION = f"{GROUP}/restart-generation"
CONFIG_HASH_ANNOTATION = f"{GROUP}/config-hash"
# Kubernetes probes cannot reach loopback, so they check that the public (P2P) port listens; a
# client that opens it late (a long block index load) gets up to an hour through the startup probe.
PROBE_PERIOD_S = 10
STARTUP_FAILURES = 360
LIVENESS_FAILURES = 6
# The init step that writes random bytes as hex, once: the path and byte count are arguments,
# never part of the script, and come from the adapter, not from the spec.
RANDOM_HEX_SCRIPT = (
    '[ -s "$1" ] || { head -c "$2" /dev/urandom | od -An -v -tx1 | tr -d " \\n" > "$1.tmp" '
    '&& chmod 0444 "$1.tmp" && mv "$1.tmp" "$1"; }'
)
# The probe sidecar (probe.py, probe_server.py): its container, its port's name (no role's port
# name, `<role>-<name>`, lacks a dash) and its small share of the node (Python, uvicorn, httpx).
PROBE_CONTAINER = "nodeplane-probe"
PROBE_PORT_NAME = "probe"
PROBE_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "10m", "memory": "48Mi"},
    "limits": {"cpu": "200m", "memory": "160Mi"},
}
_PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_CONFIG_KEY_UNSAFE = re.compile(r"[^-._a-zA-Z0-9]")


class RenderError(NodeConfigError):
    """A node the operator cannot render (no image for a client, clashing ports, ...)."""


@dataclass(frozen=True)
class Owner:
    """The BlockchainNode that owns the rendered objects."""

    name: str
    uid: str


@dataclass(frozen=True)
class ProbeSidecar:
    """The probe sidecar of every node's pod: its image and the port it serves on."""

    image: str = OPERATOR_IMAGE
    port: int = PROBE_PORT_DEFAULT


@dataclass(frozen=True)
class RenderedNode:
    """The objects of one node, as server-side apply bodies."""

    config_map: dict[str, Any]
    stateful_set: dict[str, Any]
    headless_service: dict[str, Any]
    public_service: dict[str, Any] | None
    # A LoadBalancer's UDP ports (`<name>-public-udp`); None for the other types, whose one
    # Service may mix protocols.
    public_udp_service: dict[str, Any] | None = None

    def objects(self) -> list[dict[str, Any]]:
        """Every object, in the order to apply them (config before the pods that mount it)."""
        objects = [self.config_map, self.headless_service]
        for service in (self.public_service, self.public_udp_service):
            if service is not None:
                objects.append(service)
        objects.append(self.stateful_set)
        return objects


def child_name(node_name: str) -> str:
    """The name of a node's StatefulSet and headless Service.

    The node's own name when it fits (at most 52 characters and starting with a letter, as a
    Service name must); else `bn-` + a prefix of it + a short hash, so distinct nodes never share.
    """
    if len(node_name) <= MAX_STATEFULSET_NAME and node_name[:1].isalpha():
        return node_name
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:8]
    prefix = node_name[: MAX_STATEFULSET_NAME - len("bn-") - 1 - len(digest)].rstrip("-")
    return f"bn-{prefix}-{digest}"


def config_map_name(node_name: str) -> str:
    """The name of a node's ConfigMap."""
    return f"{child_name(node_name)}-config"


def public_service_name(node_name: str) -> str:
    """The name of a node's Service of its public ports (ClusterIP, NodePort or LoadBalancer;
    a LoadBalancer's TCP ports only)."""
    return f"{child_name(node_name)}-public"


def public_udp_service_name(node_name: str) -> str:
    """The name of a LoadBalancer node's Service of its public UDP ports (at most 63 characters,
    a Service name's limit, as child_name is at most 52)."""
    return f"{child_name(node_name)}-public-udp"


def pod_labels(node_name: str) -> dict[str, str]:
    """The labels of every object of the node; the StatefulSet selects its pod by the first."""
    return {
        NODE_LABEL: node_name,
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
    }


def _metadata(name: str, node: NodeResource, namespace: str, owner: Owner) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            **pod_labels(node.name),
            "app.kubernetes.io/name": node.spec.chain,
            "app.kubernetes.io/instance": node.name,
        },
        "ownerReferences": [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": owner.name,
                "uid": owner.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }


def port_name(role: str, name: str) -> str:
    """A container port name (an IANA service name: at most 15 characters of `a-z0-9-`):
    `<role>-<name>`, `_` spelled `-`, with the role cut short when it does not fit."""
    name = name.replace("_", "-")
    room = 15 - len(name) - 1
    if room < 1:
        raise RenderError(f"port name {name!r} of role {role!r} is too long for Kubernetes")
    candidate = f"{role[:room].rstrip('-')}-{name}"
    if not _PORT_NAME.fullmatch(candidate) or "--" in candidate:
        raise RenderError(f"port {role}.{name} has no valid Kubernetes port name")
    return candidate


@dataclass(frozen=True)
class _Port:
    """One protocol of one port: a port that is TCP and UDP is two of these."""

    role: str
    name: str
    number: int
    public: bool
    protocol: Protocol
    k8s_name: str

    def service_port(self) -> dict[str, Any]:
        """This port in a Service (the same number, to the container port of this name)."""
        return {
            "name": self.k8s_name,
            "port": self.number,
            "targetPort": self.k8s_name,
            "protocol": self.protocol.value,
        }


def _ports(defs: tuple[PortDef, ...]) -> list[_Port]:
    """Each protocol of each port, named uniquely: the TCP side (or a UDP-only port) as
    `port_name` says, the UDP side of a TCP and UDP port with `-udp` after its name."""
    ports = []
    for d in defs:
        for protocol in d.protocols:
            name = f"{d.name}-udp" if protocol == Protocol.UDP and d.tcp else d.name
            ports.append(
                _Port(d.role, d.name, d.default, d.public, protocol, port_name(d.role, name))
            )
    for what, key in (
        ("number", lambda p: f"{p.number}/{p.protocol}"),
        ("k8s_name", lambda p: p.k8s_name),
    ):
        values = [key(p) for p in ports]
        clashing = sorted({v for v in values if values.count(v) > 1})
        if clashing:
            raise RenderError(f"ports clash in the pod ({what}): {', '.join(clashing)}")
    return ports


def _config_key(relative_path: str) -> str:
    return _CONFIG_KEY_UNSAFE.sub("_", relative_path)


def config_hash(files: Mapping[str, str]) -> str:
    """A short, stable hash of the config files (key -> content)."""
    encoded = json.dumps(dict(sorted(files.items())), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def _split(quantity: str | None, parts: int, *, cpu: bool) -> str | None:
    """One container's share of a node-wide quantity, rounded up (so requests stay within
    limits: both round the same way)."""
    if quantity is None:
        return None
    if parts == 1:
        return quantity
    value = quantity_value(quantity)
    if cpu:
        return f"{math.ceil(value * 1000 / parts)}m"
    return str(math.ceil(value / parts))


def _resources(node: NodeResource, adapter: ChainAdapter, containers: int) -> dict[str, Any]:
    spec = node.spec
    defaults = adapter.resource_defaults(spec.network, spec.node_type)
    r = spec.resources
    requests = {
        "cpu": _split(r.cpu_request or defaults.cpu_request, containers, cpu=True),
        "memory": _split(r.memory_request or defaults.memory_request, containers, cpu=False),
    }
    limits = {
        "cpu": _split(r.cpu_limit, containers, cpu=True),
        "memory": _split(r.memory_limit, containers, cpu=False),
    }
    out: dict[str, Any] = {}
    if present := {k: v for k, v in requests.items() if v is not None}:
        out["requests"] = present
    if present := {k: v for k, v in limits.items() if v is not None}:
        out["limits"] = present
    return out


def _probes(role: str, ports: list[_Port], sidecar: ProbeSidecar) -> dict[str, Any]:
    """Startup and liveness: the public (P2P) port accepts connections. Readiness: the probe
    sidecar says this role answers RPC (running or syncing), which only a container of the pod
    can ask."""
    probes: dict[str, Any] = {
        "readinessProbe": {
            # The sidecar shares the pod's network: the kubelet reaches it on the pod IP.
            "httpGet": {"path": f"/ready/{role}", "port": sidecar.port},
            "periodSeconds": PROBE_PERIOD_S,
            "failureThreshold": 3,
        }
    }
    public = next((p for p in ports if p.public and p.protocol == Protocol.TCP), None)
    if public is None:
        return probes

    def probe(period: int, failures: int) -> dict[str, Any]:
        return {
            "tcpSocket": {"port": public.k8s_name},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "startupProbe": probe(PROBE_PERIOD_S, STARTUP_FAILURES),
        **probes,
        "livenessProbe": probe(PROBE_PERIOD_S * 3, LIVENESS_FAILURES),
    }


def _security_context(user: int | None) -> dict[str, Any]:
    """A container's: no privilege escalation, no capabilities (the clients bind ports above
    1024 and need none), and a non-root user unless the image needs root (`user` None)."""
    context: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if user is not None:
        context.update(runAsUser=user, runAsGroup=NODE_GROUP, runAsNonRoot=True)
    return context


def _pod_security_context(users: list[int | None]) -> dict[str, Any]:
    """The pod's: fsGroup owns the volume (the client's user can write it whichever it is),
    changed only when the volume's root does not have it yet (a full walk of a multi-terabyte
    chain on every start would take hours), the runtime's default seccomp profile, and
    runAsNonRoot when no container needs root."""
    context: dict[str, Any] = {
        "fsGroup": NODE_GROUP,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if None not in users:
        context["runAsNonRoot"] = True
    return context


def _image(process: ProcessPlan, images: Mapping[str, ClientImage]) -> ClientImage:
    image = images.get(process.client)
    if image is None:
        raise RenderError(f"no container image known for client {process.client!r}")
    return image


def _container(
    process: ProcessPlan,
    image: ClientImage,
    ports: list[_Port],
    resources: dict[str, Any],
    config_mounts: list[dict[str, Any]],
    sidecar: ProbeSidecar,
) -> dict[str, Any]:
    argv = list(process.argv)
    if image.command is not None:
        argv[0] = image.command
    own = [p for p in ports if p.role == process.role]
    container: dict[str, Any] = {
        "name": process.role,
        "image": image.reference(process.version),
        "command": argv,
        "workingDir": str(process.working_dir),
        "ports": [
            {"name": p.k8s_name, "containerPort": p.number, "protocol": p.protocol.value}
            for p in own
        ],
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": str(NODE_ROOT / "data")},
            {"name": CONFIG_VOLUME, "mountPath": str(NODE_ROOT / "config")},
            *config_mounts,
        ],
        **_probes(process.role, own, sidecar),
        "securityContext": _security_context(image.user),
    }
    if process.env:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(process.env.items())]
    if resources:
        container["resources"] = copy.deepcopy(resources)
    return container


def _probe_user(users: list[int | None]) -> int:
    """The sidecar's user: the first client's, so it can read an RPC cookie that client wrote
    mode 0600 (bitcoin-family); a client that runs as root (`None`) writes none the sidecar
    needs, so the pod's default non-root user does."""
    return next((u for u in users if u is not None), NODE_USER)


def _probe_container(
    sidecar: ProbeSidecar, plan_mount: dict[str, Any], user: int
) -> dict[str, Any]:
    """The sidecar: `nodeplane operator probe` on the plan from the ConfigMap; it reads the
    cookie (data volume) and the JWT (config directory), so both are mounted, read-only."""
    return {
        "name": PROBE_CONTAINER,
        "image": sidecar.image,
        "command": [
            "nodeplane",
            "operator",
            "probe",
            "--plan",
            plan_mount["mountPath"],
            "--listen",
            f"0.0.0.0:{sidecar.port}",
        ],
        "ports": [{"name": PROBE_PORT_NAME, "containerPort": sidecar.port, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": str(NODE_ROOT / "data"), "readOnly": True},
            {"name": CONFIG_VOLUME, "mountPath": str(NODE_ROOT / "config"), "readOnly": True},
            plan_mount,
        ],
        "resources": copy.deepcopy(PROBE_RESOURCES),
        "securityContext": {**_security_context(user), "readOnlyRootFilesystem": True},
    }


def _inside_node(relative: str, what: str) -> PurePosixPath:
    """`/node/<relative>`, which must lie in the config directory or on the data volume."""
    target = NODE_ROOT / relative
    if ".." in PurePosixPath(relative).parts or target.parts[:3] not in (
        ("/", "node", "config"),
        ("/", "node", "data"),
    ):
        raise RenderError(f"{what} is outside the node's config and data directories")
    return target


def _init_container(step: InitStep) -> dict[str, Any]:
    if step.random_hex_bytes is None:
        raise RenderError(f"init step {step.name!r} runs a command, which the operator cannot do")
    target = _inside_node(step.creates, f"init step {step.name!r}")
    return {
        "name": f"init-{step.name}",
        "image": UTILITY_IMAGE,
        "command": [
            "sh",
            "-c",
            RANDOM_HEX_SCRIPT,
            step.name,
            str(target),
            str(step.random_hex_bytes),
        ],
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": str(NODE_ROOT / "data")},
            {"name": CONFIG_VOLUME, "mountPath": str(NODE_ROOT / "config")},
        ],
        "securityContext": _security_context(NODE_USER),
    }


def _directories_container(directories: tuple[str, ...]) -> dict[str, Any]:
    """Creates the directories the processes expect (`data/<role>`) on the volume, as the agent
    does on the host; paths come from the adapter and stay under /node/config or /node/data."""
    paths = [str(_inside_node(relative, f"directory {relative!r}")) for relative in directories]
    return {
        "name": "init-directories",
        "image": UTILITY_IMAGE,
        # Group-writable (and setgid, from the fsGroup-owned volume): a client that runs as
        # another user than this container, root without capabilities included, can write there.
        "command": ["mkdir", "-p", "-m", "2775", "--", *paths],
        "volumeMounts": [
            {"name": DATA_VOLUME, "mountPath": str(NODE_ROOT / "data")},
            {"name": CONFIG_VOLUME, "mountPath": str(NODE_ROOT / "config")},
        ],
        "securityContext": _security_context(NODE_USER),
    }


def _plan(node: NodeResource, adapter: ChainAdapter, ports: list[_Port]) -> NodePlan:
    clients = adapter.client_defs(node.spec)
    ctx = RenderContext(
        node_name=node.name,
        layout=NodeLayout(root=Path(str(NODE_ROOT))),
        ports={f"{p.role}.{p.name}": p.number for p in ports},  # one per port, either protocol
        # The image's PATH finds the client (or ClientImage.command replaces argv[0]).
        binaries={role: Path(client.binary) for role, client in clients.items()},
    )
    return adapter.render(node.spec, ctx)


def render_node(
    node: NodeResource,
    adapter: ChainAdapter,
    owner: Owner,
    namespace: str,
    images: Mapping[str, ClientImage] = DEFAULT_IMAGES,
    sidecar: ProbeSidecar = ProbeSidecar(),
) -> RenderedNode:
    """Every Kubernetes object of `node`, owned by `owner`, in `namespace`, with the probe
    sidecar `sidecar` in its pod.

    Raises the adapter's NodeConfigError (UnsupportedNodeSpec, InvalidNodeConfig) or RenderError
    for a spec that cannot run here.
    """
    spec = node.spec
    # Checked first: an adapter's ports() assumes a network and clients it offers.
    adapter.client_defs(spec)
    ports = _ports(adapter.ports(spec))
    if clash := [p for p in ports if p.number == sidecar.port]:
        raise RenderError(f"port {clash[0].role}.{clash[0].name} clashes with the probe sidecar's")
    plan = _plan(node, adapter, ports)
    name = child_name(node.name)

    files = {_config_key(f.relative_path): f for f in plan.files}
    if len(files) != len(plan.files):
        raise RenderError("two config files map to the same ConfigMap key")
    config_data = {key: f.content for key, f in sorted(files.items())}
    if PLAN_FILE in config_data:
        raise RenderError(f"a config file is named like the probe plan ({PLAN_FILE})")
    # In the hash too: a new plan rolls the pod, as the sidecar reads it once at start.
    config_data[PLAN_FILE] = plan_json(spec.chain, plan.processes)
    plan_mount = {
        "name": CONFIG_FILES_VOLUME,
        "mountPath": str(NODE_ROOT / "config" / PLAN_FILE),
        "subPath": PLAN_FILE,
        "readOnly": True,
    }
    config_mounts = [
        {
            "name": CONFIG_FILES_VOLUME,
            "mountPath": str(NODE_ROOT / "config" / f.relative_path),
            "subPath": key,
            "readOnly": True,
        }
        for key, f in sorted(files.items())
    ]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(config_map_name(node.name), node, namespace, owner),
        "data": config_data,
    }

    resources = _resources(node, adapter, len(plan.processes))
    process_images = [_image(p, images) for p in plan.processes]
    containers = [
        _container(p, image, ports, resources, config_mounts, sidecar)
        for p, image in zip(plan.processes, process_images, strict=True)
    ]
    containers.append(
        _probe_container(sidecar, plan_mount, _probe_user([i.user for i in process_images]))
    )
    volumes: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "emptyDir": {}},
        {
            "name": CONFIG_FILES_VOLUME,
            # World-readable in the pod: the files hold no secret (RPC uses cookie or JWT auth).
            "configMap": {"name": config_map_name(node.name), "defaultMode": 0o444},
        },
    ]
    grace = max((p.stop_timeout_s for p in plan.processes), default=30)
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class is not None:
        claim["storageClassName"] = spec.storage.storage_class
    stateful_set = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(name, node, namespace, owner),
        "spec": {
            "replicas": 1 if spec.desired_state == DesiredState.RUNNING else 0,
            "serviceName": name,
            "selector": {"matchLabels": {NODE_LABEL: node.name}},
            "template": {
                "metadata": {
                    "labels": pod_labels(node.name),
                    "annotations": {
                        RESTART_ANNOTATION: str(spec.restart_generation),
                        CONFIG_HASH_ANNOTATION: config_hash(config_data),
                    },
                },
                "spec": {
                    "terminationGracePeriodSeconds": grace,
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security_context([i.user for i in process_images]),
                    "initContainers": [
                        _directories_container(plan.directories),
                        *(_init_container(s) for s in plan.init_steps),
                    ],
                    "containers": containers,
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": DATA_VOLUME, "labels": pod_labels(node.name)},
                    "spec": claim,
                }
            ],
        },
    }
    headless_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, node, namespace, owner),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {NODE_LABEL: node.name},
            "ports": [p.service_port() for p in ports],
        },
    }
    public = [p for p in ports if p.public]
    service_type = spec.operator.service_type
    public_udp: list[_Port] = []
    if service_type == ServiceType.LOAD_BALANCER:
        # Before 1.24 (MixedProtocolLBService) an API server refuses to create a LoadBalancer
        # with TCP and UDP ports: the UDP ones get a LoadBalancer of their own.
        public_udp = [p for p in public if p.protocol == Protocol.UDP]
        public = [p for p in public if p.protocol != Protocol.UDP]

    def public_service(name: str, service_ports: list[_Port]) -> dict[str, Any] | None:
        if not service_ports:
            return None
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(name, node, namespace, owner),
            "spec": {
                "type": service_type.value,
                "selector": {NODE_LABEL: node.name},
                "ports": [p.service_port() for p in service_ports],
            },
        }

    # One Service of the public ports whatever the type, so a change of type is an in-place
    # update of it (the API server allocates and drops node ports itself), not a new Service and
    # a deleted one; only a LoadBalancer's UDP ports move to (and back from) a second one.
    return RenderedNode(
        config_map,
        stateful_set,
        headless_service,
        public_service(public_service_name(node.name), public),
        public_service(public_udp_service_name(node.name), public_udp),
    )
