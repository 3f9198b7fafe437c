"""What an edit of a running node may change: the pure rules of turning one spec into another.

A node keeps its chain data across edits, so an edit may change client versions, overrides,
resources, the rollout policy and grow storage, but not move the node to another chain, network or
node type, add or drop a role, shrink its volume or change its storage class. A client may be
replaced by another only where the executor's adapter declares that the new client takes the old
one's data over as it is (`ClientCapability.data_compatible_with`). Whether the executor has the
chosen version at all is `capabilities.unsupported_reason`'s job.
"""

from nodeplane.protocol.capabilities import ClientCapability, ExecutorCapabilities
from nodeplane.protocol.quantities import quantity_value
from nodeplane.protocol.spec import NodeSpec
from nodeplane.protocol.spec_bounds import SpecProblem

# The causes of the revisions that go back to an earlier spec: asked for, and by itself.
ROLLBACK_CAUSE = "rollback"
AUTO_ROLLBACK_CAUSE = "auto-rollback"

_FIXED = (
    ("chain", "the chain"),
    ("network", "the network"),
    ("node_type", "the node type"),
)


def _client(
    capabilities: ExecutorCapabilities, chain: str, role: str, name: str
) -> ClientCapability | None:
    for chain_cap in capabilities.chains:
        if chain_cap.chain != chain:
            continue
        for role_cap in chain_cap.roles:
            if role_cap.role == role:
                return next((c for c in role_cap.clients if c.name == name), None)
    return None


def client_switch_allowed(
    capabilities: ExecutorCapabilities, chain: str, role: str, old: str, new: str
) -> bool:
    """Whether the executor says client `new` of `role` can take over `old`'s data in place."""
    if old == new:
        return True
    client = _client(capabilities, chain, role, new)
    return client is not None and old in client.data_compatible_with


def edit_problems(
    before: NodeSpec, after: NodeSpec, capabilities: ExecutorCapabilities
) -> list[SpecProblem]:
    """Every rule the change from `before` to `after` breaks, in a stable order; empty if the
    node may be edited so (the executor's support of `after` itself is checked separately)."""
    problems: list[SpecProblem] = []
    for attr, what in _FIXED:
        old, new = getattr(before, attr), getattr(after, attr)
        if old != new:
            path = "nodeType" if attr == "node_type" else attr
            problems.append(
                SpecProblem(
                    path,
                    f"{what} of a node cannot change ({_text(old)} → {_text(new)}): "
                    "deploy a new node instead",
                )
            )
    for role in sorted(set(before.clients) | set(after.clients)):
        old_sel, new_sel = before.clients.get(role), after.clients.get(role)
        if old_sel is None:
            problems.append(SpecProblem(f"clients.{role}", "a role cannot be added to a node"))
        elif new_sel is None:
            problems.append(SpecProblem(f"clients.{role}", "a role cannot be removed from a node"))
        elif not client_switch_allowed(capabilities, after.chain, role, old_sel.name, new_sel.name):
            problems.append(
                SpecProblem(
                    f"clients.{role}.name",
                    f"{new_sel.name!r} cannot take over the data of {old_sel.name!r}: "
                    "deploy a new node to change client",
                )
            )
    old_size, new_size = before.storage.size, after.storage.size
    if _smaller(new_size, old_size):
        problems.append(
            SpecProblem("storage.size", f"storage cannot shrink ({old_size} → {new_size})")
        )
    if before.storage.storage_class != after.storage.storage_class:
        problems.append(
            SpecProblem("storage.storageClass", "the storage class of a node cannot change")
        )
    return problems


def _smaller(new: str, old: str) -> bool:
    try:
        return quantity_value(new) < quantity_value(old)
    except ValueError:  # a malformed size is spec_bounds' problem, reported there
        return False


def _text(value: object) -> str:
    return str(getattr(value, "value", value))
