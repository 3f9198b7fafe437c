"""The BlockchainNode resource: its lightkube class, and the pure mapping between a control-plane
node (id, name, revision, NodeSpec) and the resource's body."""

import uuid
from dataclasses import dataclass
from typing import Any

from lightkube.generic_resource import create_namespaced_resource

from nodeplane.executor.operator.crd import (
    API_VERSION,
    GROUP,
    KIND,
    NODE_LABEL,
    NODE_REF_FIELDS,
    PLURAL,
    VERSION,
)
from nodeplane.protocol.names import node_name_problem
from nodeplane.protocol.spec import NodeSpec

# The lightkube resource class for `blockchainnodes.nodeplane.dev/v1alpha1` (with its `Status`
# subresource class), usable with Client.get/list/watch/apply/delete.
BlockchainNode = create_namespaced_resource(GROUP, VERSION, KIND, PLURAL)


class ResourceSpecError(ValueError):
    """A BlockchainNode's `.spec` that does not hold a valid node reference and NodeSpec."""


@dataclass(frozen=True)
class NodeResource:
    """What a BlockchainNode stands for: one revision of one control-plane node's spec."""

    node_id: uuid.UUID
    name: str
    revision: int
    spec: NodeSpec


def blockchain_node_body(node: NodeResource, namespace: str) -> dict[str, Any]:
    """The BlockchainNode that the operator applies for `node` (server-side apply body).

    The object is named after the node and labelled with it, like every child rendered from it.
    """
    if problem := node_name_problem(node.name):
        raise ResourceSpecError(problem)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": node.name,
            "namespace": namespace,
            "labels": {NODE_LABEL: node.name},
        },
        "spec": {
            "nodeId": str(node.node_id),
            "revision": node.revision,
            **node.spec.to_wire(),
        },
    }


def node_resource_of(name: str, spec: dict[str, Any]) -> NodeResource:
    """Parse a BlockchainNode's name and `.spec` back into the node it stands for.

    The API server's schema has checked most of it already; this applies the rules a structural
    schema cannot express (map keys, override value types, roles named in overrides).
    """
    if problem := node_name_problem(name):
        raise ResourceSpecError(problem)
    node_fields = {key: value for key, value in spec.items() if key not in NODE_REF_FIELDS}
    try:
        node_id = uuid.UUID(str(spec["nodeId"]))
        revision = int(spec["revision"])
        node_spec = NodeSpec.model_validate(node_fields)
    except (KeyError, TypeError, ValueError) as exc:
        raise ResourceSpecError(f"BlockchainNode {name}: invalid spec: {exc}") from exc
    return NodeResource(node_id=node_id, name=name, revision=revision, spec=node_spec)
