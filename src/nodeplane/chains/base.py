"""The ChainAdapter interface and the plain data it renders (DESIGN §1, §9).

An adapter is pure where it can be: given a NodeSpec and where the executor put things (paths,
ports, binaries), it renders config files, argv and init steps without I/O. Probing a running
process (RPC) is the one I/O method, kept at the edge.
"""

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

import httpx

from nodeplane.protocol import (
    ChainCapability,
    ClientCapability,
    NodeSpec,
    NodeType,
    ProcessStatus,
    ResourceDefaults,
    RoleCapability,
)
from nodeplane.protocol.override_rules import ConfigValueRule
from nodeplane.protocol.spec import VERSION_PATTERN


class NodeConfigError(ValueError):
    """A NodeSpec this adapter cannot render; the executor reports it as the applyError."""


class InvalidNodeConfig(NodeConfigError):
    """Overrides that touch managed settings or carry values that cannot be rendered safely.

    `problems` maps each offender (`files.<role>.<key>` or `args.<role>: <flag>`, the same
    strings as `protocol.managed_override_offenders`) to why it is refused.
    """

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        detail = "; ".join(f"{offender}: {why}" for offender, why in self.problems.items())
        super().__init__(f"invalid_node_config: {detail}")

    @property
    def offenders(self) -> list[str]:
        """The refused override keys and flags."""
        return list(self.problems)


class UnsupportedNodeSpec(NodeConfigError):
    """A network, node type, role or client this adapter does not offer."""


class IncompleteRenderContext(LookupError):
    """The executor did not allocate a port or resolve a binary the plan needs (an executor bug)."""


@dataclass(frozen=True)
class Download:
    """Where to fetch a client binary for a version, and the SHA-256 it must have."""

    url: str
    sha256: str
    # Path of the executable inside a .tar.* or .zip archive (None: the download is the executable).
    member: str | None = None


@dataclass(frozen=True)
class ClientDef:
    """One client implementation of a role: its binary, its override schema and how it stops."""

    name: str
    binary: str
    downloads: Mapping[str, Download] = field(default_factory=dict)  # version -> download
    # Flag names (no dashes, no value) and config keys nodeplane sets itself; users may not.
    managed_flags: tuple[str, ...] = ()
    managed_config_keys: tuple[str, ...] = ()
    # Flags and config keys (not managed) whose value names a file: users may give one only as a
    # relative path inside the node's directory (protocol.override_rules.path_value_problem).
    path_flags: tuple[str, ...] = ()
    path_config_keys: tuple[str, ...] = ()
    # What the client's config-file format cannot hold in a value.
    config_value_rules: tuple[ConfigValueRule, ...] = ()
    # Keys with a documented meaning and the value type they take ("int", "bool", "str", "any").
    known_config_keys: Mapping[str, str] = field(default_factory=dict)
    # Whether users may set config-file keys (overrides.files); else only flags.
    accepts_config_files: bool = False
    # Some clients (Nethermind) read flags case-insensitively and with '-' or '.' as separators.
    loose_flag_names: bool = False
    stop_signal: str = "SIGTERM"
    stop_timeout_s: int = 120
    # How to ask the binary its version, and directories searched before PATH.
    version_args: tuple[str, ...] = ("--version",)
    extra_dirs: tuple[str, ...] = ()
    # Skip `#!` launchers found on PATH (Debian's litecoind wrapper writes ~/.litecoin; npm shims
    # put node between the supervisor and the client).
    skip_scripts: bool = True
    # Clients of the same role whose data directory this one takes over as it is (the control
    # plane lets an edit switch a node from one of them to this client).
    data_compatible_with: tuple[str, ...] = ()

    def capability(self, versions: Sequence[str] = ()) -> ClientCapability:
        """What the executor declares about this client: the rules the control plane applies."""
        return ClientCapability(
            name=self.name,
            versions=list(versions),
            managed_flags=list(self.managed_flags),
            managed_config_keys=list(self.managed_config_keys),
            path_flags=list(self.path_flags),
            path_config_keys=list(self.path_config_keys),
            config_value_rules=[rule.value for rule in self.config_value_rules],
            loose_flag_names=self.loose_flag_names,
            accepts_config_files=self.accepts_config_files,
            data_compatible_with=list(self.data_compatible_with),
        )


@dataclass(frozen=True)
class RoleDef:
    """A process role of a chain and its clients."""

    role: str
    clients: tuple[ClientDef, ...]
    required: bool = True

    def client(self, name: str) -> ClientDef | None:
        """The client called `name`, if this role has it."""
        return next((c for c in self.clients if c.name == name), None)


class Protocol(StrEnum):
    """A port's transport protocol, spelled as Kubernetes spells it."""

    TCP = "TCP"
    UDP = "UDP"


TCP_ONLY = (Protocol.TCP,)
TCP_AND_UDP = (Protocol.TCP, Protocol.UDP)
UDP_ONLY = (Protocol.UDP,)


@dataclass(frozen=True)
class PortDef:
    """A port a role listens on; the executor allocates the concrete number per node."""

    role: str
    name: str
    default: int
    public: bool = False  # reachable from outside the host (P2P), else loopback only
    # What the client listens with on this number: P2P discovery (discv4/discv5) is UDP beside
    # the TCP listener, QUIC is UDP alone.
    protocols: tuple[Protocol, ...] = TCP_ONLY

    def __post_init__(self) -> None:
        if not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"port {self.key}: protocols must be distinct and not empty")

    @property
    def tcp(self) -> bool:
        """Whether the client listens on this port over TCP."""
        return Protocol.TCP in self.protocols

    @property
    def udp(self) -> bool:
        """Whether the client listens on this port over UDP."""
        return Protocol.UDP in self.protocols

    @property
    def key(self) -> str:
        """The key of this port in `RenderContext.ports`: `<role>.<name>`."""
        return f"{self.role}.{self.name}"


@dataclass(frozen=True)
class NodeLayout:
    """Where one node's files live on the executor: `<root>/{config,data}`."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "config"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"


@dataclass(frozen=True)
class RenderContext:
    """What the executor decided for a node: paths, allocated ports and resolved binaries."""

    node_name: str
    layout: NodeLayout
    ports: Mapping[str, int]  # PortDef.key -> port
    binaries: Mapping[str, Path]  # role -> executable

    def port(self, key: str) -> int:
        """The port allocated for `key` (`<role>.<name>`)."""
        try:
            return self.ports[key]
        except KeyError:
            raise IncompleteRenderContext(f"no port allocated for {key!r}") from None

    def binary(self, role: str) -> Path:
        """The executable resolved for `role`."""
        try:
            return self.binaries[role]
        except KeyError:
            raise IncompleteRenderContext(f"no binary resolved for role {role!r}") from None


@dataclass(frozen=True)
class ConfigFile:
    """A file the adapter renders under the node's config directory."""

    relative_path: str  # relative to NodeLayout.config_dir
    content: str
    mode: int = 0o600


@dataclass(frozen=True)
class InitStep:
    """A one-time step before first start; done once `creates` exists under the node root."""

    name: str
    creates: str  # path relative to the node root
    # Either random bytes written as hex (a JWT secret) or a command to run.
    random_hex_bytes: int | None = None
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class RpcEndpoint:
    """How to reach a process's RPC for probes."""

    url: str
    cookie_file: Path | None = None  # HTTP basic auth from a `user:password` cookie file


@dataclass(frozen=True)
class ProcessPlan:
    """One process of a node, fully rendered."""

    role: str
    client: str
    version: str
    argv: tuple[str, ...]
    working_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    stop_signal: str = "SIGTERM"
    stop_timeout_s: int = 120
    rpc: RpcEndpoint | None = None
    # The spec's network: probes need it (a fresh regtest chain is "running", not "syncing").
    network: str | None = None


@dataclass(frozen=True)
class NodePlan:
    """Everything needed to run a node: directories, files, init steps and processes."""

    files: tuple[ConfigFile, ...]
    init_steps: tuple[InitStep, ...]
    processes: tuple[ProcessPlan, ...]
    # Directories (relative to the node root) that must exist before any process starts.
    directories: tuple[str, ...] = ("config", "data")


@dataclass(frozen=True)
class ProbeResult:
    """What a health/sync probe saw of one process."""

    status: ProcessStatus
    height: int | None = None
    network_height: int | None = None
    peers: int | None = None
    sync_progress: float | None = None
    message: str | None = None
    # The version the running client says it is (its RPC's own answer), when it says one.
    client_version: str | None = None


class ChainAdapter(ABC):
    """Everything nodeplane knows about running one chain."""

    chain: ClassVar[str]
    networks: ClassVar[tuple[str, ...]]
    node_types: ClassVar[tuple[NodeType, ...]] = (NodeType.FULL,)

    @abstractmethod
    def roles(self, network: str) -> tuple[RoleDef, ...]:
        """The roles (processes) of a node of this chain on `network`."""

    @abstractmethod
    def resource_defaults(
        self, network: str, node_type: NodeType = NodeType.FULL
    ) -> ResourceDefaults:
        """Default CPU, memory and disk for a node of `node_type` on `network`."""

    @abstractmethod
    def ports(self, spec: NodeSpec) -> tuple[PortDef, ...]:
        """The ports the node's processes listen on."""

    @abstractmethod
    def render(self, spec: NodeSpec, ctx: RenderContext) -> NodePlan:
        """Config files, init steps and argv for `spec`; pure, no I/O.

        Raises UnsupportedNodeSpec or InvalidNodeConfig for a spec it must not run.
        """

    @abstractmethod
    async def probe(self, process: ProcessPlan, http: httpx.AsyncClient) -> ProbeResult:
        """Ask a running process how it is doing (height, peers, sync progress)."""

    def client_defs(self, spec: NodeSpec) -> dict[str, ClientDef]:
        """The client of each role of `spec` (role -> ClientDef), checked against this adapter.

        Raises UnsupportedNodeSpec for an unknown network, node type, role or client, or a
        missing required role.
        """
        if spec.chain != self.chain:
            raise UnsupportedNodeSpec(f"adapter {self.chain!r} cannot run chain {spec.chain!r}")
        if spec.network not in self.networks:
            raise UnsupportedNodeSpec(f"{self.chain} has no network {spec.network!r}")
        if spec.node_type not in self.node_types:
            raise UnsupportedNodeSpec(f"{self.chain} has no node type {spec.node_type.value!r}")
        roles = {r.role: r for r in self.roles(spec.network)}
        chosen: dict[str, ClientDef] = {}
        for role, selection in spec.clients.items():
            role_def = roles.get(role)
            if role_def is None:
                raise UnsupportedNodeSpec(f"{self.chain} {spec.network} has no role {role!r}")
            client = role_def.client(selection.name)
            if client is None:
                raise UnsupportedNodeSpec(
                    f"{self.chain} {spec.network} has no client {selection.name!r} "
                    f"for role {role!r}"
                )
            chosen[role] = client
        missing = [r.role for r in roles.values() if r.required and r.role not in chosen]
        if missing:
            raise UnsupportedNodeSpec(f"{self.chain} {spec.network} needs roles {missing}")
        return chosen

    def capability(self, installed: Mapping[str, Sequence[str]]) -> ChainCapability:
        """What this adapter offers given the client versions available (client -> versions).

        Roles are merged across networks (the wire model has no per-network roles): a role is
        required only if every network requires it; `render` enforces the per-network truth.
        """
        merged: dict[str, dict[str, ClientDef]] = {}
        required: dict[str, bool] = {}
        per_network = [{r.role: r for r in self.roles(n)} for n in self.networks]
        for roles in per_network:
            for role in roles.values():
                clients = merged.setdefault(role.role, {})
                for client in role.clients:
                    clients.setdefault(client.name, client)
        for role_name in merged:
            required[role_name] = all(
                role_name in roles and roles[role_name].required for roles in per_network
            )
        return ChainCapability(
            chain=self.chain,
            networks=list(self.networks),
            node_types=list(self.node_types),
            roles=[
                RoleCapability(
                    role=role_name,
                    required=required[role_name],
                    clients=[
                        c.capability(
                            sorted(
                                v
                                for v in set(installed.get(c.name, ())) | set(c.downloads)
                                # A version the wire cannot carry would refuse the whole sync.
                                if re.fullmatch(VERSION_PATTERN, v)
                            )[::-1]
                        )
                        for c in clients.values()
                    ],
                )
                for role_name, clients in merged.items()
            ],
            resource_defaults={n: self.resource_defaults(n) for n in self.networks},
        )
