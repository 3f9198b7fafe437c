"""Bitcoin-family rendering: INI layout with the network section, argv, cookie paths, defaults."""

from pathlib import Path

import pytest

from nodeplane.chains.base import NodeLayout, NodePlan, RenderContext
from nodeplane.chains.bitcoin_family import BITCOIN, LITECOIN, BitcoinFamilyAdapter
from nodeplane.protocol import NodeSpec
from tests.chains.support import ini_sections as sections

ROOT = Path("/srv/nodeplane/nodes/btc-1")


def spec(chain: str, network: str, **overrides: object) -> NodeSpec:
    client = {"bitcoin": "bitcoind", "litecoin": "litecoind"}[chain]
    return NodeSpec.model_validate(
        {
            "chain": chain,
            "network": network,
            "clients": {"node": {"name": client, "version": "27.0"}},
            "overrides": overrides,
        }
    )


def render(adapter: BitcoinFamilyAdapter, s: NodeSpec) -> NodePlan:
    ctx = RenderContext(
        node_name="btc-1",
        layout=NodeLayout(ROOT),
        ports={"node.rpc": 40001, "node.p2p": 40002, "node.onion": 40003},
        binaries={"node": Path("/usr/local/bin/bitcoind")},
    )
    return adapter.render(s, ctx)


@pytest.mark.parametrize(
    ("adapter", "network", "selector", "section", "cookie"),
    [
        (BITCOIN, "mainnet", None, "main", "data/.cookie"),
        (BITCOIN, "testnet", "testnet", "test", "data/testnet3/.cookie"),
        (BITCOIN, "signet", "signet", "signet", "data/signet/.cookie"),
        (BITCOIN, "regtest", "regtest", "regtest", "data/regtest/.cookie"),
        (LITECOIN, "mainnet", None, "main", "data/.cookie"),
        (LITECOIN, "testnet", "testnet", "test", "data/testnet4/.cookie"),
        (LITECOIN, "regtest", "regtest", "regtest", "data/regtest/.cookie"),
    ],
)
def test_network_selection_section_and_cookie(
    adapter: BitcoinFamilyAdapter, network: str, selector: str | None, section: str, cookie: str
) -> None:
    plan = render(adapter, spec(adapter.chain, network))
    (file,) = plan.files
    assert file.relative_path == f"{adapter.chain}.conf"
    assert file.mode == 0o600
    parsed = sections(file.content)
    assert parsed[""] == ({selector: "1"} if selector else {})
    assert set(parsed) == {"", section}
    assert parsed[section] == {
        "server": "1",
        "rpcbind": "127.0.0.1",
        "rpcallowip": "127.0.0.1",
        "rpcport": "40001",
        "port": "40002",
        "bind": "127.0.0.1:40003=onion",  # the last of the two `bind` lines
    }
    # P2P on every interface, Tor's inbound port on one allocated for the node (not the
    # network's fixed one, which every node of the host would claim).
    binds = [line for line in file.content.splitlines() if line.startswith("bind=")]
    assert binds == ["bind=0.0.0.0", "bind=127.0.0.1:40003=onion"]
    (process,) = plan.processes
    assert process.rpc is not None
    assert process.rpc.url == "http://127.0.0.1:40001/"
    assert process.rpc.cookie_file == ROOT / cookie
    assert process.network == network


def test_argv_has_no_daemon_and_ends_with_user_flags() -> None:
    plan = render(
        LITECOIN, spec("litecoin", "regtest", args={"node": ["-dbcache=512", "-debug=net"]})
    )
    (process,) = plan.processes
    assert process.argv == (
        "/usr/local/bin/bitcoind",
        f"-datadir={ROOT}/data",
        f"-conf={ROOT}/config/litecoin.conf",
        "-printtoconsole=1",
        "-dbcache=512",
        "-debug=net",
    )
    assert (process.stop_signal, process.stop_timeout_s) == ("SIGTERM", 600)
    assert process.working_dir == ROOT / "data"
    assert plan.init_steps == ()
    assert set(plan.directories) == {"config", "data"}


def test_user_keys_land_in_the_network_section_typed() -> None:
    plan = render(
        BITCOIN,
        spec("bitcoin", "signet", files={"node": {"txindex": True, "dbcache": 4096, "prune": 0}}),
    )
    parsed = sections(plan.files[0].content)
    assert parsed["signet"]["txindex"] == "1"
    assert parsed["signet"]["dbcache"] == "4096"
    assert parsed["signet"]["prune"] == "0"


def test_ports_and_resource_defaults() -> None:
    s = spec("bitcoin", "mainnet")
    ports = {p.key: p for p in BITCOIN.ports(s)}
    assert (ports["node.rpc"].default, ports["node.rpc"].public) == (8332, False)
    assert (ports["node.p2p"].default, ports["node.p2p"].public) == (8333, True)
    assert (ports["node.onion"].default, ports["node.onion"].public) == (8334, False)
    litecoin = LITECOIN.ports(spec("litecoin", "regtest"))
    assert [p.default for p in litecoin] == [19443, 19444, 19445]
    for adapter in (BITCOIN, LITECOIN):
        for network in adapter.networks:
            defaults = [p.default for p in adapter.ports(spec(adapter.chain, network))]
            assert len(set(defaults)) == len(defaults), (adapter.chain, network, defaults)
    main = BITCOIN.resource_defaults("mainnet")
    assert (main.cpu_request, main.memory_request, main.storage_size) == ("2", "4Gi", "600Gi")
    assert BITCOIN.resource_defaults("signet").storage_size == "20Gi"
    assert LITECOIN.resource_defaults("regtest").storage_size == "1Gi"
