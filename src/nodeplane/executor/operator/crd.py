"""The BlockchainNode CustomResourceDefinition, built from the protocol's own rules.

One source of truth: the patterns, enums and bounds come from `nodeplane.protocol`, so the API
server refuses a malformed spec with the same rules the control plane applies. The committed
manifest under deploy/kubernetes/crd/ is this module's output (`python -m
nodeplane.executor.operator.crd > deploy/kubernetes/crd/blockchainnodes.yaml`); a test checks they
are equal.

API level Kubernetes 1.20: apiextensions.k8s.io/v1, structural schema, status subresource, no CEL
rules. What a structural schema cannot say is checked by the operator when it parses the resource
into a NodeSpec: the names of map keys (roles, config keys), the type of a config-file override
value (a string, number or boolean), requests within limits.
"""

import sys
from typing import Any

import yaml

from nodeplane.protocol.enums import (
    DesiredState,
    NodeType,
    ProcessStatus,
    RestartPolicy,
    ServiceType,
)
from nodeplane.protocol.json_values import MAX_JSON_INTEGER
from nodeplane.protocol.names import MAX_NODE_NAME_LENGTH
from nodeplane.protocol.observed import MAX_APPLY_ERROR_LENGTH, MAX_MESSAGE_LENGTH
from nodeplane.protocol.quantities import MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS
from nodeplane.protocol.spec import (
    IDENTIFIER_PATTERN,
    MAX_CLIENTS,
    MAX_HEALTH_WINDOW_SECONDS,
    MAX_OVERRIDE_ARGS_PER_ROLE,
    MAX_OVERRIDE_KEYS_PER_ROLE,
    MAX_OVERRIDE_VALUE_LENGTH,
    MAX_RESTART_GENERATION,
    QUANTITY_PATTERN,
    VERSION_PATTERN,
)

GROUP = "nodeplane.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BlockchainNode"
PLURAL = "blockchainnodes"
SINGULAR = "blockchainnode"
SHORT_NAMES = ("bn",)
CRD_NAME = f"{PLURAL}.{GROUP}"
# The field manager of every server-side apply the operator makes.
FIELD_MANAGER = "nodeplane-operator"
# The field manager of the controller's status writes. Kept apart from FIELD_MANAGER: a 1.20
# API server does not tell subresources apart in managedFields, so one manager applying the spec
# and then the status would hand its fields back and forth, changing the object on every write.
STATUS_FIELD_MANAGER = "nodeplane-operator-status"
# The label every object belonging to a node carries, with the node's name as value.
NODE_LABEL = f"{GROUP}/node"


class Phase:
    """The BlockchainNode's `.status.phase` values (DESIGN §5)."""

    PENDING = "Pending"
    CONFIGURING = "Configuring"
    RUNNING = "Running"
    SYNCING = "Syncing"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    ERROR = "Error"

    ALL = (PENDING, CONFIGURING, RUNNING, SYNCING, STOPPING, STOPPED, ERROR)


DNS1123_LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# A command-line flag: starts with '-', is not only dashes, and holds no line break or other
# control character (Go regexp syntax: the API server evaluates it).
_NO_CONTROL = r"\x00-\x1f\x7f\x{85}\x{2028}\x{2029}"
FLAG_PATTERN = rf"^-+[^-{_NO_CONTROL}][^{_NO_CONTROL}]*$"
# The longest quantity quantity_problem accepts: digits, point, fraction digits, a 2-letter suffix.
MAX_QUANTITY_LENGTH = MAX_INTEGER_DIGITS + 1 + MAX_FRACTION_DIGITS + 2
MAX_IDENTIFIER_LENGTH = 32
MAX_VERSION_LENGTH = 64
# metav1.Condition's bounds, which `kubectl` and client libraries expect of `.status.conditions`.
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

Schema = dict[str, Any]


def _string(pattern: str, max_length: int, *, nullable: bool = False) -> Schema:
    schema: Schema = {"type": "string", "maxLength": max_length, "pattern": pattern}
    if nullable:
        schema["nullable"] = True
    return schema


def _enum(values: tuple[str, ...] | list[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


# The API server holds `minimum`/`maximum` as float64: a bound past 2**53 is rounded, and 2**63 - 1
# rounds up to 2**63, which overflows int64 when compared; `format: int64` bounds those already.
_EXACT_FLOAT_INTEGER = 2**53


def _integer(minimum: int, maximum: int) -> Schema:
    schema: Schema = {"type": "integer", "format": "int64", "minimum": minimum}
    if maximum < _EXACT_FLOAT_INTEGER:
        schema["maximum"] = maximum
    return schema


def _object(properties: dict[str, Schema], *, required: tuple[str, ...] = ()) -> Schema:
    schema: Schema = {"type": "object"}
    if required:
        schema["required"] = list(required)
    schema["properties"] = properties
    return schema


def _identifier(*, nullable: bool = False) -> Schema:
    return _string(IDENTIFIER_PATTERN, MAX_IDENTIFIER_LENGTH, nullable=nullable)


def _quantity(*, nullable: bool = False) -> Schema:
    return _string(QUANTITY_PATTERN, MAX_QUANTITY_LENGTH, nullable=nullable)


def node_spec_schema() -> Schema:
    """The schema of the NodeSpec fields (camelCase, as on the wire) inside `.spec`."""
    client = _object(
        {"name": _identifier(), "version": _string(VERSION_PATTERN, MAX_VERSION_LENGTH)},
        required=("name", "version"),
    )
    # A config-file value is a string, number or boolean; a structural schema cannot say "one of
    # these types", so the value is kept as given and the operator's NodeSpec parse checks it.
    config_value: Schema = {"x-kubernetes-preserve-unknown-fields": True}
    files_of_role: Schema = {
        "type": "object",
        "maxProperties": MAX_OVERRIDE_KEYS_PER_ROLE,
        "additionalProperties": config_value,
    }
    args_of_role: Schema = {
        "type": "array",
        "maxItems": MAX_OVERRIDE_ARGS_PER_ROLE,
        "items": _string(FLAG_PATTERN, MAX_OVERRIDE_VALUE_LENGTH),
    }
    return {
        "chain": _identifier(),
        "network": _identifier(),
        "nodeType": _enum([t.value for t in NodeType]),
        "clients": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_CLIENTS,
            "additionalProperties": client,
        },
        "storage": _object({"size": _quantity(), "storageClass": _identifier(nullable=True)}),
        "resources": _object(
            {
                "cpuRequest": _quantity(nullable=True),
                "cpuLimit": _quantity(nullable=True),
                "memoryRequest": _quantity(nullable=True),
                "memoryLimit": _quantity(nullable=True),
            }
        ),
        "overrides": _object(
            {
                "files": {"type": "object", "additionalProperties": files_of_role},
                "args": {"type": "object", "additionalProperties": args_of_role},
            }
        ),
        "desiredState": _enum([s.value for s in DesiredState]),
        "restartGeneration": _integer(0, MAX_RESTART_GENERATION),
        "agent": _object({"restartPolicy": _enum([p.value for p in RestartPolicy])}),
        "operator": _object({"serviceType": _enum([t.value for t in ServiceType])}),
        "rollout": _object(
            {
                "healthWindowSeconds": _integer(1, MAX_HEALTH_WINDOW_SECONDS),
                "autoRollback": {"type": "boolean"},
            }
        ),
    }


# Fields of `.spec` that are not NodeSpec's: which control-plane node and revision it is.
NODE_REF_FIELDS = ("nodeId", "revision")


def spec_schema() -> Schema:
    """`.spec`: the node's id and spec revision, then the NodeSpec fields."""
    properties: dict[str, Schema] = {
        "nodeId": _string(UUID_PATTERN, 36),
        "revision": _integer(0, MAX_JSON_INTEGER),
        **node_spec_schema(),
    }
    return _object(properties, required=("nodeId", "revision", "chain", "network", "clients"))


def status_schema() -> Schema:
    """`.status`, written only by the operator through the status subresource."""
    condition = _object(
        {
            "type": _string(CONDITION_TYPE_PATTERN, 316),
            "status": _enum(["True", "False", "Unknown"]),
            "observedGeneration": _integer(0, MAX_JSON_INTEGER),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "reason": _string(CONDITION_REASON_PATTERN, 1024),
            "message": {"type": "string", "maxLength": 32768},
        },
        required=("type", "status", "lastTransitionTime"),
    )
    container = _object(
        {
            "role": _identifier(),
            "container": _string(DNS1123_LABEL_PATTERN, MAX_NODE_NAME_LENGTH),
            "status": _enum([s.value for s in ProcessStatus]),
            "ready": {"type": "boolean"},
            "restartCount": _integer(0, MAX_JSON_INTEGER),
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": MAX_MESSAGE_LENGTH},
            # From the pod's probe sidecar (probe.py), once it has answered for the role.
            "height": _integer(0, MAX_JSON_INTEGER),
            "networkHeight": _integer(0, MAX_JSON_INTEGER),
            "peers": _integer(0, MAX_JSON_INTEGER),
            "syncProgress": {"type": "number", "minimum": 0, "maximum": 1},
        },
        required=("role", "status"),
    )
    return _object(
        {
            "phase": _enum(Phase.ALL),
            "observedGeneration": _integer(0, MAX_JSON_INTEGER),
            # The spec revision the children were last rendered from.
            "revision": _integer(0, MAX_JSON_INTEGER),
            "height": _integer(0, MAX_JSON_INTEGER),
            "message": {"type": "string", "maxLength": MAX_APPLY_ERROR_LENGTH},
            "conditions": {
                "type": "array",
                "maxItems": 16,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": condition,
            },
            "containers": {
                "type": "array",
                "maxItems": MAX_CLIENTS,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["role"],
                "items": container,
            },
        }
    )


PRINTER_COLUMNS: list[Schema] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Revision", "type": "integer", "jsonPath": ".spec.revision"},
    {"name": "Height", "type": "integer", "jsonPath": ".status.height"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Chain", "type": "string", "jsonPath": ".spec.chain", "priority": 1},
    {"name": "Network", "type": "string", "jsonPath": ".spec.network", "priority": 1},
    {"name": "Desired", "type": "string", "jsonPath": ".spec.desiredState", "priority": 1},
]


def crd_manifest() -> Schema:
    """The CustomResourceDefinition `blockchainnodes.nodeplane.dev` as a plain object."""
    # The object's name is the node's name: a DNS-1123 label, as the control plane requires.
    metadata = _object({"name": _string(DNS1123_LABEL_PATTERN, MAX_NODE_NAME_LENGTH)})
    schema = _object(
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata,
            "spec": spec_schema(),
            "status": status_schema(),
        },
        required=("spec",),
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["nodeplane"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = (
    "# Generated by `python -m nodeplane.executor.operator.crd`; do not edit by hand\n"
    "# (tests/executor/operator/test_crd.py checks that it matches).\n"
)


def crd_yaml() -> str:
    """The manifest as committed under deploy/kubernetes/crd/."""
    body = yaml.safe_dump(crd_manifest(), sort_keys=False, default_flow_style=False, width=100)
    return HEADER + body


if __name__ == "__main__":
    sys.stdout.write(crd_yaml())
