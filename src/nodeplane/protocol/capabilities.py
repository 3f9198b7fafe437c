"""What an executor declares it can run, and the pure checks of a NodeSpec against it.

Every string an executor declares is restricted to a name pattern and every list is bounded:
capabilities are written by a host the control plane does not control, then shown to people
(deploy forms, the executors page), so nothing in them may be markup, a path or a novel.
"""

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import Field, StringConstraints

from nodeplane.protocol.enums import NodeType
from nodeplane.protocol.override_rules import (
    config_value_rule_problem,
    flag_name,
    flag_value,
    loose_name,
    path_value_problem,
)
from nodeplane.protocol.spec import (
    QUANTITY_PATTERN,
    ConfigKey,
    ConfigValue,
    Identifier,
    NodeSpec,
    Version,
)
from nodeplane.protocol.wire import WireModel

# A flag name as adapters list it, without value: `datadir`, `JsonRpc.Port`, `c` (leading dashes,
# which some executors write, are ignored when flags are compared).
FlagName = Annotated[str, StringConstraints(pattern=r"^-{0,2}[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
# A quantity an executor suggests; bounded in length (a stored spec's quantity is checked on write).
DefaultQuantity = Annotated[str, StringConstraints(max_length=32, pattern=QUANTITY_PATTERN)]

MAX_VERSIONS = 256
MAX_SETTING_NAMES = 4096  # Bitcoin Core's managed names, with section and `no` prefixes, are ~500
MAX_RULES = 16
MAX_CLIENTS_PER_ROLE = 32
MAX_ROLES = 16
MAX_NETWORKS = 64
MAX_CHAINS = 64
MAX_STORAGE_CLASSES = 256


class ClientCapability(WireModel):
    """One client implementation for a role, its installable versions and its managed settings."""

    name: Identifier
    versions: list[Version] = Field(default_factory=list, max_length=MAX_VERSIONS)
    managed_flags: list[FlagName] = Field(default_factory=list, max_length=MAX_SETTING_NAMES)
    managed_config_keys: list[ConfigKey] = Field(default_factory=list, max_length=MAX_SETTING_NAMES)
    # Flags and config keys whose value names a file: a relative path inside the node's directory.
    path_flags: list[FlagName] = Field(default_factory=list, max_length=MAX_SETTING_NAMES)
    path_config_keys: list[ConfigKey] = Field(default_factory=list, max_length=MAX_SETTING_NAMES)
    # Restrictions of the config-file format on values (see override_rules.ConfigValueRule).
    config_value_rules: list[Identifier] = Field(default_factory=list, max_length=MAX_RULES)
    # The client reads flags case-insensitively and with any of '-', '.', '_' as separators.
    loose_flag_names: bool = False
    # Whether users may set config-file keys; an executor that does not say is trusted to decide.
    accepts_config_files: bool = True
    # Clients of the same role whose data directory this client can take over in place: an edit
    # may switch a node from one of them to this one (protocol.spec_edit).
    data_compatible_with: list[Identifier] = Field(
        default_factory=list, max_length=MAX_CLIENTS_PER_ROLE
    )


class RoleCapability(WireModel):
    """A process role of a chain (for example `execution`, `consensus`, `node`)."""

    role: Identifier
    required: bool = True
    clients: list[ClientCapability] = Field(default_factory=list, max_length=MAX_CLIENTS_PER_ROLE)


class ResourceDefaults(WireModel):
    """An adapter's default resources for a network, used to prefill deploy forms."""

    cpu_request: DefaultQuantity | None = None
    memory_request: DefaultQuantity | None = None
    storage_size: DefaultQuantity | None = None


class ChainCapability(WireModel):
    """A chain the executor can run: networks, node types and roles with their clients."""

    chain: Identifier
    networks: list[Identifier] = Field(default_factory=list, max_length=MAX_NETWORKS)
    node_types: list[NodeType] = Field(
        default_factory=lambda: [NodeType.FULL], max_length=len(NodeType)
    )
    roles: list[RoleCapability] = Field(default_factory=list, max_length=MAX_ROLES)
    resource_defaults: dict[Identifier, ResourceDefaults] = Field(
        default_factory=dict, max_length=MAX_NETWORKS
    )


class ExecutorCapabilities(WireModel):
    """Everything an executor can run; overwritten on every sync."""

    chains: list[ChainCapability] = Field(default_factory=list, max_length=MAX_CHAINS)
    storage_classes: list[Identifier] = Field(default_factory=list, max_length=MAX_STORAGE_CLASSES)


def unsupported_reason(spec: NodeSpec, capabilities: ExecutorCapabilities) -> str | None:
    """Why the executor cannot run `spec` (chain, network, type, role, client, version), or None."""
    chain = next((c for c in capabilities.chains if c.chain == spec.chain), None)
    if chain is None:
        return f"executor does not support chain {spec.chain!r}"
    if spec.network not in chain.networks:
        return f"executor does not support network {spec.network!r} of chain {spec.chain!r}"
    if spec.node_type not in chain.node_types:
        return f"executor does not support node type {spec.node_type.value!r} for {spec.chain!r}"
    roles = {r.role: r for r in chain.roles}
    for role in spec.clients:
        if role not in roles:
            return f"chain {spec.chain!r} has no role {role!r}"
    for role_cap in chain.roles:
        selection = spec.clients.get(role_cap.role)
        if selection is None:
            if role_cap.required:
                return f"role {role_cap.role!r} is required for chain {spec.chain!r}"
            continue
        client = next((c for c in role_cap.clients if c.name == selection.name), None)
        if client is None:
            return f"executor has no client {selection.name!r} for role {role_cap.role!r}"
        if selection.version not in client.versions:
            return (
                f"executor has no version {selection.version!r} of {selection.name!r} "
                f"(available: {', '.join(client.versions) or 'none'})"
            )
    if (
        spec.storage.storage_class is not None
        and capabilities.storage_classes
        and spec.storage.storage_class not in capabilities.storage_classes
    ):
        return f"executor has no storage class {spec.storage.storage_class!r}"
    return None


def _selected_clients(
    spec: NodeSpec, capabilities: ExecutorCapabilities
) -> dict[str, ClientCapability]:
    """The declared client of each role of `spec` (role -> capability), where there is one."""
    chain = next((c for c in capabilities.chains if c.chain == spec.chain), None)
    if chain is None:
        return {}
    clients: dict[str, ClientCapability] = {}
    for role_cap in chain.roles:
        selection = spec.clients.get(role_cap.role)
        if selection is None:
            continue
        for client in role_cap.clients:
            if client.name == selection.name:
                clients[role_cap.role] = client
    return clients


def _flag_in(client: ClientCapability, flag: str, names: list[str]) -> bool:
    name = flag_name(flag)
    declared = {flag_name(n) for n in names}
    if name in declared:
        return True
    return client.loose_flag_names and loose_name(name) in {loose_name(n) for n in declared}


def is_managed_flag(client: ClientCapability, flag: str) -> bool:
    """Whether `flag` sets something `client` manages itself."""
    return _flag_in(client, flag, client.managed_flags)


def is_path_flag(client: ClientCapability, flag: str) -> bool:
    """Whether `flag` takes a file path for `client`."""
    return _flag_in(client, flag, client.path_flags)


MANAGED = "managed by nodeplane"


def _config_value_problem(client: ClientCapability, key: str, value: ConfigValue) -> str | None:
    if key in client.managed_config_keys:
        return MANAGED
    if not client.accepts_config_files:
        return f"{client.name} takes flags only (overrides.args)"
    # A number or a boolean cannot name a file outside the node's directory; a string may.
    if (
        key in client.path_config_keys
        and isinstance(value, str)
        and (why := path_value_problem(value))
    ):
        return why
    for rule in client.config_value_rules:
        if why := config_value_rule_problem(rule, value):
            return why
    return None


def _flag_problem(client: ClientCapability, flag: str) -> str | None:
    if is_managed_flag(client, flag):
        return MANAGED
    if is_path_flag(client, flag):
        return path_value_problem(flag_value(flag))
    return None


def client_override_problems(
    role: str, client: ClientCapability, files: Mapping[str, ConfigValue], args: Sequence[str]
) -> dict[str, str]:
    """What the client's declared rules refuse in one role's overrides (offender -> why).

    Managed keys and flags, config files for a flags-only client, values its config format
    cannot hold, and file paths that are not relative paths inside the node's directory.
    Offenders are `files.<role>.<key>` and `args.<role>: <flag>`. Both sides call this: the
    control plane with what the executor declared, the executor with its adapter's own rules.
    """
    problems: dict[str, str] = {}
    for key, value in files.items():
        if why := _config_value_problem(client, key, value):
            problems[f"files.{role}.{key}"] = why
    for flag in args:
        if why := _flag_problem(client, flag):
            problems[f"args.{role}: {flag}"] = why
    return problems


def override_problems(spec: NodeSpec, capabilities: ExecutorCapabilities) -> dict[str, str]:
    """Every override of `spec` the declared rules refuse (offender -> why); files first."""
    clients = _selected_clients(spec, capabilities)
    problems: dict[str, str] = {}
    for role, entries in spec.overrides.files.items():
        if role in clients:
            problems.update(client_override_problems(role, clients[role], entries, ()))
    for role, flags in spec.overrides.args.items():
        if role in clients:
            problems.update(client_override_problems(role, clients[role], {}, flags))
    return problems


def managed_override_offenders(spec: NodeSpec, capabilities: ExecutorCapabilities) -> list[str]:
    """The override keys and flags that touch settings the adapter manages itself."""
    return [o for o, why in override_problems(spec, capabilities).items() if why == MANAGED]
