"""Overrides at render time: managed settings refused, hostile values kept inert."""

from collections.abc import Mapping
from pathlib import Path

import pytest

from nodeplane.chains.base import InvalidNodeConfig, NodeLayout, RenderContext
from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.overrides import merge_args
from nodeplane.protocol import NodeSpec, Overrides
from tests.chains.support import ini_sections as sections

ROOT = Path("/srv/nodeplane/nodes/n-1")
HOSTILE = [
    "-uacomment=$(rm -rf /)",
    "-uacomment=`id`",
    "-uacomment='quoted' \"double\"",
    "-uacomment=100%n %s %%",
    "-uacomment=a b; c && d | e > /etc/passwd",
    "-uacomment=${HOME}",
]


def ltc(files: Mapping[str, object] | None = None, args: list[str] | None = None) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
            "overrides": {"files": {"node": files or {}}, "args": {"node": args or []}},
        }
    )


def eth(el_args: list[str], el: str = "geth", files: dict[str, object] | None = None) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": "mainnet",
            "clients": {
                "execution": {"name": el, "version": "1"},
                "consensus": {"name": "lighthouse", "version": "1"},
            },
            "overrides": {"args": {"execution": el_args}, "files": {"execution": files or {}}},
        }
    )


def ltc_ctx() -> RenderContext:
    return RenderContext(
        "n-1",
        NodeLayout(ROOT),
        {"node.rpc": 1, "node.p2p": 2, "node.onion": 3},
        {"node": Path("/b")},
    )


def eth_ctx(s: NodeSpec) -> RenderContext:
    ports = {p.key: 30000 + i for i, p in enumerate(ETHEREUM.ports(s))}
    return RenderContext(
        "n-1", NodeLayout(ROOT), ports, {"execution": Path("/e"), "consensus": Path("/c")}
    )


def test_hostile_flag_values_stay_single_argv_words() -> None:
    plan = LITECOIN.render(ltc(args=HOSTILE), ltc_ctx())
    argv = plan.processes[0].argv
    assert argv[-len(HOSTILE) :] == tuple(HOSTILE)
    assert len(argv) == 4 + len(HOSTILE)


def test_hostile_config_values_cannot_add_lines_or_sections() -> None:
    values = {
        "uacomment": "[main] rpcport=1",
        "debug": "$(reboot) `id` 'q' \"d\" 100% ",
        "externalip": "1.2.3.4 ; rpcbind=0.0.0.0",
    }
    plan = LITECOIN.render(ltc(files=values), ltc_ctx())
    conf = plan.files[0].content
    parsed = sections(conf)
    assert set(parsed) == {"", "regtest"}
    assert parsed["regtest"]["rpcport"] == "1"  # the managed value, from ltc_ctx
    assert parsed["regtest"]["rpcbind"] == "127.0.0.1"
    assert parsed["regtest"]["uacomment"] == "[main] rpcport=1"
    assert conf.count("\n") == len(conf.splitlines())


@pytest.mark.parametrize(
    "value", ["a\nrpcport=1", "a\r[main]", "tab\tx", "nul\x00", "ls\u2028x", "del\x7f"]
)
def test_line_breaking_values_are_refused_even_if_the_model_was_bypassed(value: str) -> None:
    with pytest.raises(ValueError):
        Overrides.model_validate({"files": {"node": {"uacomment": value}}})
    bypassed = ltc().model_copy(
        update={
            "overrides": Overrides.model_construct(files={"node": {"uacomment": value}}, args={})
        }
    )
    with pytest.raises(InvalidNodeConfig) as err:
        LITECOIN.render(bypassed, ltc_ctx())
    assert err.value.offenders == ["files.node.uacomment"]


def test_hash_in_an_ini_value_is_refused_not_truncated() -> None:
    with pytest.raises(InvalidNodeConfig, match="'#'"):
        LITECOIN.render(ltc(files={"uacomment": "a#b"}), ltc_ctx())


def test_bypassed_flag_problems_are_refused() -> None:
    for flag in ["not-a-flag", "--", "-x=\n-datadir=/etc"]:
        bypassed = ltc().model_copy(
            update={"overrides": Overrides.model_construct(files={}, args={"node": [flag]})}
        )
        with pytest.raises(InvalidNodeConfig):
            LITECOIN.render(bypassed, ltc_ctx())


@pytest.mark.parametrize(
    "key",
    [
        "rpcport",
        "regtest.rpcport",
        "main.port",
        "datadir",
        "conf",
        "noconf",
        "includeconf",
        "rpcbind",
        "regtest.norpcbind",
        "rpcallowip",
        "rpcuser",
        "rpcpassword",
        "rpcauth",
        "server",
        "noserver",
        "daemon",
        "printtoconsole",
        "regtest",
        "testnet",
        "chain",
        "blocknotify",
        "walletnotify",
        "blocksdir",
        "pid",
        "debuglogfile",
    ],
)
def test_managed_config_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidNodeConfig) as err:
        LITECOIN.render(ltc(files={key: "1"}), ltc_ctx())
    assert err.value.offenders == [f"files.node.{key}"]
    assert err.value.problems[f"files.node.{key}"] == "managed by nodeplane"
    assert "invalid_node_config" in str(err.value)


@pytest.mark.parametrize(
    "flag",
    [
        "-datadir=/etc",
        "--datadir=/etc",
        "-conf=/etc/passwd",
        "-noconf",
        "-rpcport=1",
        "-regtest.rpcport=1",
        "-rpcbind=0.0.0.0",
        "-rpcallowip=0.0.0.0/0",
        "-server=0",
        "-daemon",
        "-printtoconsole=0",
        "-testnet",
        "-chain=main",
        "-blocknotify=curl evil",
        "-startupnotify=sh",
    ],
)
def test_managed_flags_are_refused(flag: str) -> None:
    with pytest.raises(InvalidNodeConfig) as err:
        LITECOIN.render(ltc(args=[flag]), ltc_ctx())
    assert err.value.offenders == [f"args.node: {flag}"]


@pytest.mark.parametrize(
    ("client", "flag"),
    [
        ("geth", "--datadir=/etc"),
        ("geth", "-datadir=/etc"),
        ("geth", "--authrpc.jwtsecret=/tmp/x"),
        ("geth", "--http.addr=0.0.0.0"),
        ("geth", "--authrpc.addr=0.0.0.0"),
        ("geth", "--sepolia"),
        ("geth", "--gcmode=full"),
        ("geth", "--ipcpath=/tmp/geth.ipc"),
        ("reth", "--log.file.directory=/var/log"),
        ("reth", "--full"),
        ("nethermind", "--JsonRpc.Host=0.0.0.0"),
        ("nethermind", "--jsonrpc.host=0.0.0.0"),
        ("nethermind", "--JSONRPC-HOST=0.0.0.0"),
        ("nethermind", "-dd=/etc"),
        ("erigon", "--private.api.addr=0.0.0.0:9090"),
    ],
)
def test_managed_ethereum_flags_are_refused(client: str, flag: str) -> None:
    s = eth([flag], client)
    with pytest.raises(InvalidNodeConfig) as err:
        ETHEREUM.render(s, eth_ctx(s))
    assert err.value.offenders == [f"args.execution: {flag}"]


def test_ethereum_clients_take_flags_not_config_files() -> None:
    s = eth([], files={"cache": 4096})
    with pytest.raises(InvalidNodeConfig, match="takes flags only"):
        ETHEREUM.render(s, eth_ctx(s))


def test_known_keys_are_type_checked() -> None:
    with pytest.raises(InvalidNodeConfig, match="must be an integer"):
        LITECOIN.render(ltc(files={"dbcache": "lots"}), ltc_ctx())
    with pytest.raises(InvalidNodeConfig, match="must be a boolean"):
        LITECOIN.render(ltc(files={"txindex": 7}), ltc_ctx())
    LITECOIN.render(ltc(files={"txindex": 1, "dbcache": 300, "someunknownkey": "x"}), ltc_ctx())


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(InvalidNodeConfig) as err:
        LITECOIN.render(ltc(files={"rpcport": 1, "dbcache": "x"}, args=["-datadir=/"]), ltc_ctx())
    assert sorted(err.value.offenders) == [
        "args.node: -datadir=/",
        "files.node.dbcache",
        "files.node.rpcport",
    ]


def test_merge_args_drops_default_groups_the_user_sets() -> None:
    managed = ["--a=1"]
    defaults = [("--b=2",), ("--c=3", "--d=4")]
    assert merge_args(managed, defaults, []) == ["--a=1", "--b=2", "--c=3", "--d=4"]
    assert merge_args(managed, defaults, ["--d=9"]) == ["--a=1", "--b=2", "--d=9"]
    assert merge_args(managed, defaults, ["--B=5"]) == ["--a=1", "--c=3", "--d=4", "--B=5"]
