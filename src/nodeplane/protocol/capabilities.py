"""What an executor declares it can run, and the pure checks of a NodeSpec against it."""

from pydantic import Field

from nodeplane.protocol.enums import NodeType
from nodeplane.protocol.spec import NodeSpec, Quantity
from nodeplane.protocol.wire import WireModel


class ClientCapability(WireModel):
    """One client implementation for a role, its installable versions and its managed settings."""

    name: str
    versions: list[str] = Field(default_factory=list)
    managed_flags: list[str] = Field(default_factory=list)
    managed_config_keys: list[str] = Field(default_factory=list)


class RoleCapability(WireModel):
    """A process role of a chain (for example `execution`, `consensus`, `node`)."""

    role: str
    required: bool = True
    clients: list[ClientCapability] = Field(default_factory=list)


class ResourceDefaults(WireModel):
    """An adapter's default resources for a network, used to prefill deploy forms."""

    cpu_request: Quantity | None = None
    memory_request: Quantity | None = None
    storage_size: Quantity | None = None


class ChainCapability(WireModel):
    """A chain the executor can run: networks, node types and roles with their clients."""

    chain: str
    networks: list[str] = Field(default_factory=list)
    node_types: list[NodeType] = Field(default_factory=lambda: [NodeType.FULL])
    roles: list[RoleCapability] = Field(default_factory=list)
    resource_defaults: dict[str, ResourceDefaults] = Field(default_factory=dict)


class ExecutorCapabilities(WireModel):
    """Everything an executor can run; overwritten on every sync."""

    chains: list[ChainCapability] = Field(default_factory=list)
    storage_classes: list[str] = Field(default_factory=list)


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


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def managed_override_offenders(spec: NodeSpec, capabilities: ExecutorCapabilities) -> list[str]:
    """The override keys and flags that touch settings the adapter manages itself."""
    chain = next((c for c in capabilities.chains if c.chain == spec.chain), None)
    if chain is None:
        return []
    clients: dict[str, ClientCapability] = {}
    for role_cap in chain.roles:
        selection = spec.clients.get(role_cap.role)
        if selection is None:
            continue
        for client in role_cap.clients:
            if client.name == selection.name:
                clients[role_cap.role] = client
    offenders: list[str] = []
    for role, entries in spec.overrides.files.items():
        managed_keys = set(clients[role].managed_config_keys) if role in clients else set()
        offenders += [f"files.{role}.{key}" for key in entries if key in managed_keys]
    for role, flags in spec.overrides.args.items():
        managed_flags = (
            {_flag_name(f) for f in clients[role].managed_flags} if role in clients else set()
        )
        offenders += [f"args.{role}: {flag}" for flag in flags if _flag_name(flag) in managed_flags]
    return offenders
