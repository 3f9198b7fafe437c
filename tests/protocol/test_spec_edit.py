"""The pure rules of editing a node's spec, as a table."""

from typing import Any

import pytest

from nodeplane.protocol import (
    ChainCapability,
    ClientCapability,
    ExecutorCapabilities,
    NodeSpec,
    RoleCapability,
)
from nodeplane.protocol.spec_edit import client_switch_allowed, edit_problems

CAPS = ExecutorCapabilities(
    chains=[
        ChainCapability(
            chain="ethereum",
            networks=["mainnet", "sepolia"],
            roles=[
                RoleCapability(
                    role="execution",
                    clients=[
                        ClientCapability(name="geth", versions=["1.14.0", "1.14.1"]),
                        # A fork that reads geth's database as it is, but not the other way.
                        ClientCapability(
                            name="geth-fork", versions=["1.0.0"], data_compatible_with=["geth"]
                        ),
                        ClientCapability(name="reth", versions=["1.0.0"]),
                    ],
                ),
                RoleCapability(
                    role="consensus",
                    required=False,
                    clients=[ClientCapability(name="lighthouse", versions=["5.3.0"])],
                ),
            ],
        )
    ]
)


def spec(**changes: Any) -> NodeSpec:
    raw: dict[str, Any] = {
        "chain": "ethereum",
        "network": "mainnet",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.0"},
            "consensus": {"name": "lighthouse", "version": "5.3.0"},
        },
        "storage": {"size": "100Gi"},
    }
    raw.update(changes)
    return NodeSpec.model_validate(raw)


GETH_1141 = {"name": "geth", "version": "1.14.1"}
LH = {"name": "lighthouse", "version": "5.3.0"}

CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("nothing", {}, []),
    ("version upgrade", {"clients": {"execution": GETH_1141, "consensus": LH}}, []),
    (
        "compatible client switch",
        {"clients": {"execution": {"name": "geth-fork", "version": "1.0.0"}, "consensus": LH}},
        [],
    ),
    (
        "incompatible client switch",
        {"clients": {"execution": {"name": "reth", "version": "1.0.0"}, "consensus": LH}},
        ["clients.execution.name"],
    ),
    ("role removed", {"clients": {"execution": GETH_1141}}, ["clients.consensus"]),
    ("storage grows", {"storage": {"size": "2Ti"}}, []),
    ("storage grows across units", {"storage": {"size": "110G"}}, []),
    ("storage shrinks", {"storage": {"size": "99Gi"}}, ["storage.size"]),
    ("storage shrinks across units", {"storage": {"size": "100G"}}, ["storage.size"]),
    (
        "storage class",
        {"storage": {"size": "100Gi", "storageClass": "fast"}},
        ["storage.storageClass"],
    ),
    ("network", {"network": "sepolia"}, ["network"]),
    ("chain", {"chain": "bitcoin"}, ["chain"]),
    ("node type", {"nodeType": "archive"}, ["nodeType"]),
    (
        "overrides and resources",
        {"resources": {"cpuLimit": "4"}, "overrides": {"args": {"execution": ["--cache=4096"]}}},
        [],
    ),
    (
        "several at once, stable order",
        {
            "network": "sepolia",
            "storage": {"size": "1Gi"},
            "clients": {"execution": {"name": "reth", "version": "1.0.0"}},
        },
        ["network", "clients.consensus", "clients.execution.name", "storage.size"],
    ),
]


@pytest.mark.parametrize(("changes", "paths"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edit_rules(changes: dict[str, Any], paths: list[str]) -> None:
    problems = edit_problems(spec(), spec(**changes), CAPS)
    assert [p.path for p in problems] == paths
    assert all(p.message for p in problems)


def test_added_role_is_refused() -> None:
    before = spec(clients={"execution": {"name": "geth", "version": "1.14.0"}})
    assert [p.path for p in edit_problems(before, spec(), CAPS)] == ["clients.consensus"]


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        ("geth", "geth", True),
        ("geth", "geth-fork", True),
        ("geth-fork", "geth", False),  # declared one way only
        ("geth", "reth", False),
        ("geth", "unknown", False),
    ],
)
def test_client_switch_follows_the_declaration(old: str, new: str, allowed: bool) -> None:
    assert client_switch_allowed(CAPS, "ethereum", "execution", old, new) is allowed


def test_switch_on_an_executor_that_declares_nothing_is_refused() -> None:
    assert not client_switch_allowed(ExecutorCapabilities(), "ethereum", "execution", "a", "b")
