"""NodeSpec validation, node-name validation and the capability checks of a spec."""

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from nodeplane.protocol import (
    MAX_NODE_NAME_LENGTH,
    ChainCapability,
    ClientCapability,
    DesiredState,
    ExecutorCapabilities,
    NodeSpec,
    NodeType,
    RestartPolicy,
    RoleCapability,
    ServiceType,
    is_valid_node_name,
    managed_override_offenders,
    node_name_problem,
    unsupported_reason,
)
from nodeplane.protocol.spec import (
    MAX_OVERRIDE_ARGS_PER_ROLE,
    MAX_OVERRIDE_KEYS_PER_ROLE,
    MAX_OVERRIDE_VALUE_LENGTH,
)


def base_spec() -> dict[str, Any]:
    return {
        "chain": "ethereum",
        "network": "mainnet",
        "clients": {
            "execution": {"name": "geth", "version": "1.14.0"},
            "consensus": {"name": "lighthouse", "version": "v5.1.0"},
        },
    }


def spec_with(**changes: Any) -> dict[str, Any]:
    data = base_spec()
    data.update(copy.deepcopy(changes))
    return data


def with_args(*flags: str, role: str = "execution") -> dict[str, Any]:
    return spec_with(overrides={"args": {role: list(flags)}})


def with_files(entries: dict[str, Any], role: str = "execution") -> dict[str, Any]:
    return spec_with(overrides={"files": {role: entries}})


# --- NodeSpec: aliases and defaults -------------------------------------------------------------


CAMEL = spec_with(
    nodeType="archive",
    desiredState="stopped",
    restartGeneration=3,
    storage={"size": "2Ti", "storageClass": "fast-ssd"},
    resources={"cpuRequest": "2", "cpuLimit": "4", "memoryRequest": "8Gi", "memoryLimit": "16Gi"},
    overrides={"files": {"execution": {"Eth.SyncMode": "snap"}}, "args": {"consensus": ["-v"]}},
    agent={"restartPolicy": "always"},
    operator={"serviceType": "NodePort"},
)
SNAKE = spec_with(
    node_type="archive",
    desired_state="stopped",
    restart_generation=3,
    storage={"size": "2Ti", "storage_class": "fast-ssd"},
    resources={
        "cpu_request": "2",
        "cpu_limit": "4",
        "memory_request": "8Gi",
        "memory_limit": "16Gi",
    },
    overrides={"files": {"execution": {"Eth.SyncMode": "snap"}}, "args": {"consensus": ["-v"]}},
    agent={"restart_policy": "always"},
    operator={"service_type": "NodePort"},
)


@pytest.mark.parametrize("data", [CAMEL, SNAKE], ids=["camelCase", "snake_case"])
def test_spec_accepts_camel_and_snake_case(data: dict[str, Any]) -> None:
    spec = NodeSpec.model_validate(data)
    assert spec.node_type is NodeType.ARCHIVE
    assert spec.desired_state is DesiredState.STOPPED
    assert spec.restart_generation == 3
    assert spec.storage.size == "2Ti"
    assert spec.storage.storage_class == "fast-ssd"
    assert spec.resources.cpu_request == "2"
    assert spec.resources.memory_limit == "16Gi"
    assert spec.agent.restart_policy is RestartPolicy.ALWAYS
    assert spec.operator.service_type is ServiceType.NODE_PORT
    assert spec.overrides.files == {"execution": {"Eth.SyncMode": "snap"}}
    assert spec.overrides.args == {"consensus": ["-v"]}


def test_camel_and_snake_case_give_the_same_spec() -> None:
    assert NodeSpec.model_validate(CAMEL) == NodeSpec.model_validate(SNAKE)


def test_wire_form_is_camel_case_and_round_trips() -> None:
    spec = NodeSpec.model_validate(SNAKE)
    wire = spec.to_wire()
    assert {"nodeType", "desiredState", "restartGeneration"} <= set(wire)
    assert "desired_state" not in wire
    assert wire["storage"] == {"size": "2Ti", "storageClass": "fast-ssd"}
    assert NodeSpec.model_validate(wire) == spec
    assert NodeSpec.model_validate_json(spec.model_dump_json(by_alias=True)) == spec


def test_defaults() -> None:
    spec = NodeSpec.model_validate(base_spec())
    assert spec.node_type is NodeType.FULL
    assert spec.desired_state is DesiredState.RUNNING
    assert spec.restart_generation == 0
    assert spec.storage.size == "100Gi"
    assert spec.overrides.files == {}
    assert spec.overrides.args == {}


def test_spec_is_immutable() -> None:
    spec = NodeSpec.model_validate(base_spec())
    with pytest.raises(ValidationError):
        spec.chain = "bitcoin"  # type: ignore[misc]


def test_config_values_keep_their_types() -> None:
    spec = NodeSpec.model_validate(
        with_files({"flag": True, "count": 3, "ratio": 0.5, "text": "3"})
    )
    values = spec.overrides.files["execution"]
    assert values["flag"] is True
    assert type(values["count"]) is int
    assert type(values["ratio"]) is float
    assert values["text"] == "3"


# --- NodeSpec: refusals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        spec_with(colour="blue"),
        spec_with(desiredstate="running"),  # neither the alias nor the field name
        spec_with(storage={"size": "1Ti", "sizee": "2Ti"}),
        spec_with(
            clients={"execution": {"name": "geth", "version": "1.14.0", "image": "evil:latest"}}
        ),
        spec_with(overrides={"env": {"execution": {"A": "b"}}}),
        spec_with(resources={"gpu": "1"}),
        spec_with(agent={"restartPolicy": "always", "user": "root"}),
        spec_with(operator={"serviceType": "ClusterIP", "hostNetwork": True}),
    ],
    ids=["top", "wrong-case", "storage", "client", "overrides", "resources", "agent", "operator"],
)
def test_unknown_fields_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(data)


@pytest.mark.parametrize(
    "flag",
    [
        "rpcport=1",
        "",
        " --cache=1",
        "-",
        "--",
        "---",
        "--a\nb",
        "--a\rb",
        "--a\x00b",
        "--cache\n",
        "--" + "x" * (MAX_OVERRIDE_VALUE_LENGTH - 1),
    ],
    ids=[
        "no-dash",
        "empty",
        "leading-space",
        "single-dash",
        "double-dash",
        "triple-dash",
        "newline",
        "carriage-return",
        "nul",
        "trailing-newline",
        "too-long",
    ],
)
def test_bad_override_args_are_refused(flag: str) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_args("--ok", flag))


@pytest.mark.parametrize(
    "flag",
    [
        "--cache=4096",
        "-v",
        "--http.api=eth,net",
        "--" + "x" * (MAX_OVERRIDE_VALUE_LENGTH - 2),
    ],
    ids=["long-form", "short", "dotted", "max-length"],
)
def test_good_override_args_are_accepted(flag: str) -> None:
    spec = NodeSpec.model_validate(with_args(flag))
    assert spec.overrides.args["execution"] == [flag]


def test_override_arg_count_limit() -> None:
    at_limit = [f"--f{i}" for i in range(MAX_OVERRIDE_ARGS_PER_ROLE)]
    assert NodeSpec.model_validate(with_args(*at_limit)).overrides.args["execution"] == at_limit
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_args(*at_limit, "--one-more"))


def test_override_file_key_count_limit() -> None:
    at_limit = {f"key{i}": i for i in range(MAX_OVERRIDE_KEYS_PER_ROLE)}
    spec = NodeSpec.model_validate(with_files(at_limit))
    assert len(spec.overrides.files["execution"]) == MAX_OVERRIDE_KEYS_PER_ROLE
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_files({**at_limit, "extra": 1}))


@pytest.mark.parametrize(
    "value",
    ["a\nb", "a\rb", "a\x00b", "x" * (MAX_OVERRIDE_VALUE_LENGTH + 1)],
    ids=["newline", "carriage-return", "nul", "too-long"],
)
def test_bad_override_file_values_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_files({"Node.Name": value}))


def test_override_file_value_at_length_limit_is_accepted() -> None:
    value = "x" * MAX_OVERRIDE_VALUE_LENGTH
    spec = NodeSpec.model_validate(with_files({"Node.Name": value}))
    assert spec.overrides.files["execution"]["Node.Name"] == value


@pytest.mark.parametrize("key", ["", "../etc", "a b", ".hidden", "a/b", "k\n", "x" * 129])
def test_bad_override_file_keys_are_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_files({key: 1}))


@pytest.mark.parametrize("section", ["args", "files"])
def test_overrides_for_roles_not_in_clients_are_refused(section: str) -> None:
    value: Any = ["--x"] if section == "args" else {"x": 1}
    with pytest.raises(ValidationError, match="validator"):
        NodeSpec.model_validate(spec_with(overrides={section: {"validator": value}}))
    # The same override naming a role that is in clients is fine.
    NodeSpec.model_validate(spec_with(overrides={section: {"consensus": value}}))


@pytest.mark.parametrize("field", ["restartGeneration", "restart_generation"])
def test_negative_restart_generation_is_refused(field: str) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(spec_with(**{field: -1}))
    assert NodeSpec.model_validate(spec_with(**{field: 0})).restart_generation == 0


@pytest.mark.parametrize(
    "data",
    [
        spec_with(chain="Ethereum"),
        spec_with(chain="../etc"),
        spec_with(chain="ethereum\n"),
        spec_with(chain=""),
        spec_with(network="main net"),
        spec_with(network="-mainnet"),
        spec_with(clients={}),
        spec_with(clients={f"role{i}": {"name": "c", "version": "1"} for i in range(9)}),
        spec_with(clients={"Execution": {"name": "geth", "version": "1"}}),
        spec_with(clients={"execution": {"name": "geth;rm", "version": "1"}}),
        spec_with(clients={"execution": {"name": "geth", "version": "../1"}}),
        spec_with(clients={"execution": {"name": "geth", "version": "1.0\n"}}),
        spec_with(clients={"execution": {"name": "geth", "version": "1 0"}}),
        spec_with(desiredState="paused"),
        spec_with(nodeType="light"),
        spec_with(storage={"size": "lots"}),
        spec_with(storage={"size": "1Ti; rm"}),
        spec_with(storage={"storageClass": "../x"}),
        spec_with(resources={"cpuRequest": "-1"}),
    ],
    ids=[
        "chain-upper",
        "chain-path",
        "chain-trailing-newline",
        "chain-empty",
        "network-space",
        "network-leading-dash",
        "no-clients",
        "too-many-clients",
        "role-upper",
        "client-name-shell",
        "version-path",
        "version-trailing-newline",
        "version-space",
        "desired-state",
        "node-type",
        "storage-size",
        "storage-size-shell",
        "storage-class",
        "cpu-negative",
    ],
)
def test_bad_identifiers_and_values_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(data)


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
def test_non_finite_config_values_are_refused(value: float) -> None:
    # inf/nan serialize to JSON null, so a stored spec holding one could never be read back.
    with pytest.raises(ValidationError):
        NodeSpec.model_validate(with_files({"ratio": value}))


# --- node names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "a b", "A", "", "a" * 64, "-a", "a-", "a_b", "a.b", "a\n", "node/1", "nödé"],
)
def test_invalid_node_names(name: str) -> None:
    problem = node_name_problem(name)
    assert isinstance(problem, str)
    assert problem
    assert is_valid_node_name(name) is False


@pytest.mark.parametrize("name", ["a" * 63, "a", "node-1", "0", "1-2", "a--b"])
def test_valid_node_names(name: str) -> None:
    assert node_name_problem(name) is None
    assert is_valid_node_name(name) is True


def test_node_name_length_limit() -> None:
    assert MAX_NODE_NAME_LENGTH == 63
    assert is_valid_node_name("a" * MAX_NODE_NAME_LENGTH)
    assert not is_valid_node_name("a" * (MAX_NODE_NAME_LENGTH + 1))


# --- capabilities -------------------------------------------------------------------------------


@pytest.fixture
def caps() -> ExecutorCapabilities:
    return ExecutorCapabilities(
        chains=[
            ChainCapability(
                chain="ethereum",
                networks=["mainnet", "sepolia"],
                node_types=[NodeType.FULL],
                roles=[
                    RoleCapability(
                        role="execution",
                        clients=[
                            ClientCapability(
                                name="geth",
                                versions=["1.14.0", "1.14.1"],
                                managed_flags=["rpcport", "--datadir", "--http.port"],
                                managed_config_keys=["Node.DataDir", "Node.HTTPPort"],
                            ),
                            ClientCapability(name="reth", versions=["1.0.0"]),
                        ],
                    ),
                    RoleCapability(
                        role="consensus",
                        clients=[
                            ClientCapability(
                                name="lighthouse",
                                versions=["v5.1.0"],
                                managed_flags=["--datadir"],
                            )
                        ],
                    ),
                    RoleCapability(
                        role="validator",
                        required=False,
                        clients=[ClientCapability(name="lighthouse", versions=["v5.1.0"])],
                    ),
                ],
            ),
        ],
        storage_classes=["fast-ssd"],
    )


def spec(**changes: Any) -> NodeSpec:
    return NodeSpec.model_validate(spec_with(**changes))


def test_supported_spec_has_no_reason(caps: ExecutorCapabilities) -> None:
    assert unsupported_reason(spec(), caps) is None
    assert unsupported_reason(spec(network="sepolia"), caps) is None
    assert unsupported_reason(spec(storage={"storageClass": "fast-ssd"}), caps) is None
    with_optional = base_spec()["clients"] | {
        "validator": {"name": "lighthouse", "version": "v5.1.0"}
    }
    assert unsupported_reason(spec(clients=with_optional), caps) is None


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"chain": "bitcoin"}, "bitcoin"),
        ({"network": "holesky"}, "holesky"),
        ({"nodeType": "archive"}, "archive"),
        (
            {"clients": {"execution": {"name": "geth", "version": "1.14.0"}}},
            "consensus",
        ),
        (
            {
                "clients": {
                    "execution": {"name": "erigon", "version": "1.14.0"},
                    "consensus": {"name": "lighthouse", "version": "v5.1.0"},
                }
            },
            "erigon",
        ),
        (
            {
                "clients": {
                    "execution": {"name": "geth", "version": "1.13.9"},
                    "consensus": {"name": "lighthouse", "version": "v5.1.0"},
                }
            },
            "1.13.9",
        ),
        (
            {
                "clients": {
                    "execution": {"name": "geth", "version": "1.14.0"},
                    "consensus": {"name": "lighthouse", "version": "v5.1.0"},
                    "mev": {"name": "mev-boost", "version": "1.7"},
                }
            },
            "mev",
        ),
        ({"storage": {"storageClass": "slow-hdd"}}, "slow-hdd"),
    ],
    ids=[
        "unknown-chain",
        "unknown-network",
        "unsupported-node-type",
        "missing-required-role",
        "unknown-client",
        "unknown-version",
        "unknown-role",
        "unknown-storage-class",
    ],
)
def test_unsupported_reasons(
    caps: ExecutorCapabilities, changes: dict[str, Any], mentions: str
) -> None:
    reason = unsupported_reason(spec(**changes), caps)
    assert isinstance(reason, str)
    assert mentions in reason


def test_client_of_another_role_is_not_accepted(caps: ExecutorCapabilities) -> None:
    clients = {
        "execution": {"name": "lighthouse", "version": "v5.1.0"},
        "consensus": {"name": "lighthouse", "version": "v5.1.0"},
    }
    assert unsupported_reason(spec(clients=clients), caps) is not None


def test_any_storage_class_when_executor_lists_none(caps: ExecutorCapabilities) -> None:
    no_classes = caps.model_copy(update={"storage_classes": []})
    assert unsupported_reason(spec(storage={"storageClass": "whatever"}), no_classes) is None


def test_empty_capabilities_support_nothing() -> None:
    assert unsupported_reason(spec(), ExecutorCapabilities()) is not None


def test_managed_flags_are_offenders(caps: ExecutorCapabilities) -> None:
    offenders = managed_override_offenders(
        spec(overrides={"args": {"execution": ["--rpcport=1", "--cache=4096", "-rpcport"]}}),
        caps,
    )
    assert len(offenders) == 2
    assert any("--rpcport=1" in o for o in offenders)
    assert any(o.endswith("-rpcport") and "--rpcport=1" not in o for o in offenders)
    assert not any("cache" in o for o in offenders)
    assert all("execution" in o for o in offenders)


@pytest.mark.parametrize(
    "flag",
    [
        "--rpcport",
        "-rpcport",
        "--rpcport=1",
        "-rpcport=1",
        "--datadir=/tmp",
        "-datadir",
        "--http.port=1",
    ],
)
def test_managed_flag_spellings_are_matched(caps: ExecutorCapabilities, flag: str) -> None:
    offenders = managed_override_offenders(spec(overrides={"args": {"execution": [flag]}}), caps)
    assert len(offenders) == 1
    assert flag in offenders[0]


@pytest.mark.parametrize("flag", ["--rpcportx=1", "--rpc", "--http.portal", "--http", "--cache"])
def test_similar_flags_are_not_offenders(caps: ExecutorCapabilities, flag: str) -> None:
    assert managed_override_offenders(spec(overrides={"args": {"execution": [flag]}}), caps) == []


def test_managed_config_keys_are_offenders(caps: ExecutorCapabilities) -> None:
    offenders = managed_override_offenders(
        spec(overrides={"files": {"execution": {"Node.DataDir": "/x", "Eth.SyncMode": "snap"}}}),
        caps,
    )
    assert len(offenders) == 1
    assert "Node.DataDir" in offenders[0]
    assert "execution" in offenders[0]


def test_managed_settings_are_per_role_and_client(caps: ExecutorCapabilities) -> None:
    # rpcport is managed for geth (execution), not for lighthouse (consensus).
    assert (
        managed_override_offenders(spec(overrides={"args": {"consensus": ["--rpcport=1"]}}), caps)
        == []
    )
    # --datadir is managed for lighthouse too.
    assert (
        len(
            managed_override_offenders(
                spec(overrides={"args": {"consensus": ["--datadir=/x"]}}), caps
            )
        )
        == 1
    )
    # reth declares no managed settings.
    reth = {
        "execution": {"name": "reth", "version": "1.0.0"},
        "consensus": {"name": "lighthouse", "version": "v5.1.0"},
    }
    assert (
        managed_override_offenders(
            spec(
                clients=reth,
                overrides={
                    "args": {"execution": ["--rpcport=1"]},
                    "files": {"execution": {"Node.DataDir": "/x"}},
                },
            ),
            caps,
        )
        == []
    )


def test_offenders_collect_files_and_args_together(caps: ExecutorCapabilities) -> None:
    offenders = managed_override_offenders(
        spec(
            overrides={
                "files": {"execution": {"Node.HTTPPort": 1, "Node.DataDir": "/x"}},
                "args": {"execution": ["--datadir=/y"], "consensus": ["--datadir=/z"]},
            }
        ),
        caps,
    )
    assert len(offenders) == 4


def test_no_offenders_without_overrides_or_for_unknown_chain(caps: ExecutorCapabilities) -> None:
    assert managed_override_offenders(spec(), caps) == []
    assert (
        managed_override_offenders(
            spec(chain="bitcoin", overrides={"args": {"execution": ["--rpcport=1"]}}), caps
        )
        == []
    )
