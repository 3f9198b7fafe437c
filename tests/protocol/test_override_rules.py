"""The override rules an executor declares and the control plane applies: file paths, config
value rules, managed settings (loosely compared where the client reads flags loosely)."""

from typing import Any

import pytest

from nodeplane.protocol import (
    ChainCapability,
    ClientCapability,
    ExecutorCapabilities,
    NodeSpec,
    RoleCapability,
    managed_override_offenders,
    override_problems,
)
from nodeplane.protocol.capabilities import MANAGED, client_override_problems
from nodeplane.protocol.override_rules import (
    ConfigValueRule,
    config_value_rule_problem,
    flag_value,
    path_value_problem,
)

BAD_PATHS = [
    "/etc/shadow",
    "//etc/shadow",
    "~/.ssh/authorized_keys",
    "~root/x",
    "../x",
    "a/../../x",
    "a/..",
    "..",
    "$HOME/x",
    "${HOME}",
    "",
]
GOOD_PATHS = ["ip_asn.map", "maps/ip_asn.map", "./x", "a..b", "x/.../y", "file.dat", "-"]


@pytest.mark.parametrize("value", BAD_PATHS)
def test_paths_leaving_the_node_directory_are_refused(value: str) -> None:
    assert path_value_problem(value) is not None


@pytest.mark.parametrize("value", GOOD_PATHS)
def test_relative_paths_inside_pass(value: str) -> None:
    assert path_value_problem(value) is None


def test_a_path_option_needs_its_value_after_equals() -> None:
    # `--nodekey -../../x` would hand the next word to the client as the path.
    assert flag_value("--nodekey") is None
    assert "relative path" in (path_value_problem(flag_value("--nodekey")) or "")
    assert flag_value("--nodekey=a=b") == "a=b"


@pytest.mark.parametrize(
    ("value", "bad"), [("a#b", True), ("#", True), ("ab", False), (35, False), (True, False)]
)
def test_no_hash_rule(value: Any, bad: bool) -> None:
    assert (config_value_rule_problem(ConfigValueRule.NO_HASH, value) is not None) is bad


def test_an_unknown_rule_is_left_to_the_executor() -> None:
    assert config_value_rule_problem("no-tabs-on-tuesdays", "a#b") is None


BITCOINISH = ClientCapability(
    name="litecoind",
    versions=["0.21.4"],
    managed_flags=["datadir", "conf"],
    managed_config_keys=["datadir"],
    path_flags=["asmap", "regtest.asmap"],
    path_config_keys=["asmap"],
    config_value_rules=["no-hash"],
)
LOOSE = ClientCapability(
    name="nethermind",
    versions=["1.0"],
    managed_flags=["JsonRpc.Host", "--datadir"],
    path_flags=["Init.ChainSpecPath"],
    loose_flag_names=True,
    accepts_config_files=False,
)

CLIENT_TABLE: list[tuple[ClientCapability, dict[str, Any], list[str], dict[str, str]]] = [
    (BITCOINISH, {}, ["-asmap=/etc/shadow"], {"args.r: -asmap=/etc/shadow": "relative"}),
    (BITCOINISH, {}, ["-regtest.asmap=../x"], {"args.r: -regtest.asmap=../x": "inside"}),
    (BITCOINISH, {}, ["-asmap"], {"args.r: -asmap": "<name>=<relative path>"}),
    (BITCOINISH, {}, ["-asmap=ip_asn.map", "-txindex=1"], {}),
    (BITCOINISH, {}, ["--datadir=/x"], {"args.r: --datadir=/x": MANAGED}),
    (BITCOINISH, {"asmap": "/etc/shadow"}, [], {"files.r.asmap": "relative"}),
    (BITCOINISH, {"asmap": 1}, [], {}),
    (BITCOINISH, {"uacomment": "a#b"}, [], {"files.r.uacomment": "'#'"}),
    (BITCOINISH, {"datadir": "a#b"}, [], {"files.r.datadir": MANAGED}),
    (BITCOINISH, {"uacomment": "ab", "dbcache": 300}, [], {}),
    (LOOSE, {}, ["--jsonrpc-host=0.0.0.0"], {"args.r: --jsonrpc-host=0.0.0.0": MANAGED}),
    (LOOSE, {}, ["--DATADIR=/x"], {"args.r: --DATADIR=/x": MANAGED}),
    (
        LOOSE,
        {},
        ["--init-chainspecpath=/etc/x"],
        {"args.r: --init-chainspecpath=/etc/x": "relative"},
    ),
    (LOOSE, {}, ["--Init.ChainSpecPath=chainspec.json"], {}),
    (LOOSE, {"Init.Anything": 1}, [], {"files.r.Init.Anything": "flags only"}),
]


@pytest.mark.parametrize(("client", "files", "args", "expected"), CLIENT_TABLE)
def test_client_override_problems(
    client: ClientCapability, files: dict[str, Any], args: list[str], expected: dict[str, str]
) -> None:
    got = client_override_problems("r", client, files, args)
    assert set(got) == set(expected)
    for offender, fragment in expected.items():
        assert fragment in got[offender], (offender, got[offender])


def test_exact_clients_do_not_match_loosely() -> None:
    assert client_override_problems("r", BITCOINISH, {}, ["-DATADIR=/x", "-data-dir=/x"]) == {}


CAPS = ExecutorCapabilities(
    chains=[
        ChainCapability(
            chain="litecoin",
            networks=["regtest"],
            roles=[RoleCapability(role="node", clients=[BITCOINISH])],
        )
    ]
)


def ltc(files: dict[str, Any] | None = None, args: list[str] | None = None) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
            "overrides": {"files": {"node": files or {}}, "args": {"node": args or []}},
        }
    )


def test_spec_level_problems_and_managed_offenders() -> None:
    spec = ltc(files={"datadir": "x", "uacomment": "#"}, args=["-conf=x", "-asmap=/etc/shadow"])
    problems = override_problems(spec, CAPS)
    assert list(problems) == [
        "files.node.datadir",
        "files.node.uacomment",
        "args.node: -conf=x",
        "args.node: -asmap=/etc/shadow",
    ]
    assert managed_override_offenders(spec, CAPS) == ["files.node.datadir", "args.node: -conf=x"]
    # A chain the executor does not declare has no rules to break (unsupported_reason says so).
    assert override_problems(spec, ExecutorCapabilities()) == {}
