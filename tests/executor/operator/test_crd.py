"""The BlockchainNode CRD is generated from the protocol: the committed manifest is the generated
one, its schema covers every NodeSpec field, and its patterns agree with the protocol's rules."""

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from nodeplane.executor.operator.crd import FLAG_PATTERN, NODE_REF_FIELDS, crd_manifest, crd_yaml
from nodeplane.executor.operator.resource import (
    NodeResource,
    ResourceSpecError,
    blockchain_node_body,
    node_resource_of,
)
from nodeplane.protocol import NodeSpec, Overrides

COMMITTED = Path(__file__).resolve().parents[3] / "deploy/kubernetes/crd/blockchainnodes.yaml"


def schema() -> dict[str, Any]:
    (version,) = crd_manifest()["spec"]["versions"]
    root: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return root


def test_committed_manifest_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == crd_yaml(), (
        "regenerate: python -m nodeplane.executor.operator.crd > " + str(COMMITTED)
    )
    assert yaml.safe_load(COMMITTED.read_text()) == crd_manifest()


def _model_tree(model: type[BaseModel]) -> dict[str, Any]:
    """A model's wire field names, recursively into nested models (maps and lists stop)."""
    tree: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        alias = field.alias or name
        annotation = field.annotation
        is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        tree[alias] = _model_tree(annotation) if is_model else None  # type: ignore[arg-type]
    return tree


def _schema_tree(node: dict[str, Any]) -> dict[str, Any]:
    return {
        key: _schema_tree(child) if "properties" in child else None
        for key, child in node["properties"].items()
    }


def test_spec_schema_covers_exactly_the_node_spec_fields() -> None:
    spec_tree = _schema_tree(schema()["properties"]["spec"])
    for field in NODE_REF_FIELDS:
        assert spec_tree.pop(field) is None
    # A field added to NodeSpec (or one of its parts) fails here until the CRD describes it.
    assert spec_tree == _model_tree(NodeSpec)


FLAGS = [
    "--x",
    "-regtest",
    "--http.port=8545",
    "--=x",
    "-",
    "--",
    "x",
    "",
    "--a=b\nc",
    "--x\n",
    "--a=\tb",
    "--a=\x7f",
    "--a=\u2028",
    "--a=\x85",
    "--a=ünïcode ok",
    "--a=" + "x" * 5000,
]


def _python_flag_pattern() -> re.Pattern[str]:
    # The CRD's pattern is Go regexp syntax (the API server evaluates it); \x{NN} is Python's \xNN.
    return re.compile(
        re.sub(r"\\x\{([0-9a-f]+)\}", lambda m: chr(int(m.group(1), 16)), FLAG_PATTERN)
    )


@pytest.mark.parametrize("flag", FLAGS, ids=repr)
def test_flag_pattern_agrees_with_the_protocol(flag: str) -> None:
    items = schema()["properties"]["spec"]["properties"]["overrides"]["properties"]["args"]
    max_length = items["additionalProperties"]["items"]["maxLength"]
    crd_accepts = bool(_python_flag_pattern().fullmatch(flag)) and len(flag) <= max_length
    try:
        Overrides(args={"node": [flag]})
        protocol_accepts = True
    except ValidationError:
        protocol_accepts = False
    assert crd_accepts == protocol_accepts


SPEC = NodeSpec.model_validate(
    {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
    }
)


def test_body_round_trips_to_the_node() -> None:
    node = NodeResource(node_id=uuid.uuid4(), name="ltc-1", revision=3, spec=SPEC)
    body = blockchain_node_body(node, "nodes")
    assert body["metadata"] == {
        "name": "ltc-1",
        "namespace": "nodes",
        "labels": {"nodeplane.dev/node": "ltc-1"},
    }
    assert body["spec"]["nodeId"] == str(node.node_id)
    assert body["spec"]["revision"] == 3
    assert node_resource_of("ltc-1", body["spec"]) == node


def test_body_refuses_a_bad_name() -> None:
    node = NodeResource(node_id=uuid.uuid4(), name="Bad_Name", revision=1, spec=SPEC)
    with pytest.raises(ResourceSpecError):
        blockchain_node_body(node, "nodes")


@pytest.mark.parametrize(
    "change",
    [
        {"nodeId": "x"},
        {"revision": "x"},
        # What the structural schema lets through: a nested object as a config value, an unknown
        # role key, overrides for a role that is not a client.
        {"overrides": {"files": {"node": {"k": {"nested": 1}}}}},
        {"clients": {"Bad Role": {"name": "litecoind", "version": "1"}}},
        {"overrides": {"args": {"other": ["--x"]}}},
    ],
    ids=["node id", "revision", "nested value", "role key", "unknown role"],
)
def test_parse_refuses_what_the_schema_cannot(change: dict[str, Any]) -> None:
    node = NodeResource(node_id=uuid.uuid4(), name="ltc-1", revision=3, spec=SPEC)
    spec = {**blockchain_node_body(node, "nodes")["spec"], **change}
    with pytest.raises(ResourceSpecError):
        node_resource_of("ltc-1", spec)
