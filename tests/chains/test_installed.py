"""The executor's adapters and the capabilities it declares, checked with the protocol's rules."""

from pathlib import Path

import pytest

from nodeplane.chains.base import InvalidNodeConfig, NodeLayout, RenderContext
from nodeplane.chains.bitcoin_family import LITECOIN
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.installed import ADAPTERS, adapter_for, build_capabilities
from nodeplane.protocol import (
    ExecutorCapabilities,
    NodeSpec,
    managed_override_offenders,
    unsupported_reason,
)


def test_adapters_are_an_explicit_tuple() -> None:
    assert [a.chain for a in ADAPTERS] == ["bitcoin", "litecoin", "ethereum"]
    assert adapter_for("litecoin") is LITECOIN
    assert adapter_for("dogecoin") is None


@pytest.fixture(scope="module")
def capabilities(
    litecoind: tuple[Path, str], anvil_binary: tuple[Path, str]
) -> ExecutorCapabilities:
    """Capabilities of an executor whose data dir holds anvil and whose host has litecoind."""
    anvil_path, _ = anvil_binary
    data_dir = anvil_path.parent.parent
    return build_capabilities(data_dir, path_env="/usr/bin:/bin", storage_classes=["local"])


def test_capabilities_list_installed_versions(
    capabilities: ExecutorCapabilities,
    litecoind: tuple[Path, str],
    anvil_binary: tuple[Path, str],
) -> None:
    chains = {c.chain: c for c in capabilities.chains}
    assert set(chains) == {"bitcoin", "litecoin", "ethereum"}
    ltc = chains["litecoin"]
    assert ltc.networks == ["mainnet", "testnet", "regtest"]
    (node,) = ltc.roles
    assert node.clients[0].name == "litecoind"
    assert node.clients[0].versions == [litecoind[1]]
    assert "rpcport" in node.clients[0].managed_config_keys
    assert ltc.resource_defaults["regtest"].storage_size == "1Gi"
    eth = chains["ethereum"]
    roles = {r.role: r for r in eth.roles}
    # devnet has no consensus role: the merged view cannot require it everywhere.
    assert roles["execution"].required is True
    assert roles["consensus"].required is False
    clients = {c.name: c for c in roles["execution"].clients}
    assert set(clients) == {"geth", "reth", "nethermind", "erigon", "anvil"}
    assert clients["anvil"].versions == [anvil_binary[1]]
    assert clients["geth"].versions == []
    assert capabilities.storage_classes == ["local"]


def test_protocol_accepts_what_the_host_can_run(
    capabilities: ExecutorCapabilities, litecoind: tuple[Path, str]
) -> None:
    ok = NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": litecoind[1]}},
        }
    )
    assert unsupported_reason(ok, capabilities) is None
    geth = NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": "mainnet",
            "clients": {
                "execution": {"name": "geth", "version": "1.15.11"},
                "consensus": {"name": "lighthouse", "version": "7.0.1"},
            },
        }
    )
    assert "no version '1.15.11' of 'geth'" in (unsupported_reason(geth, capabilities) or "")


@pytest.mark.parametrize(
    ("files", "args"),
    [
        ({"rpcport": 1, "regtest.rpcbind": "0.0.0.0", "dbcache": 100}, ["-datadir=/x", "-debug=1"]),
        ({"noconf": 1, "blocknotify": "x"}, ["-main.port=1", "-noserver", "-listen=1"]),
        ({"txindex": True}, ["-connect=127.0.0.1:1"]),
    ],
)
def test_control_plane_and_adapter_refuse_the_same_overrides(
    capabilities: ExecutorCapabilities, files: dict[str, object], args: list[str]
) -> None:
    spec = NodeSpec.model_validate(
        {
            "chain": "litecoin",
            "network": "regtest",
            "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
            "overrides": {"files": {"node": files}, "args": {"node": args}},
        }
    )
    by_control_plane = managed_override_offenders(spec, capabilities)
    ctx = RenderContext(
        "n",
        NodeLayout(Path("/n")),
        {"node.rpc": 1, "node.p2p": 2, "node.onion": 3},
        {"node": Path("/b")},
    )
    try:
        LITECOIN.render(spec, ctx)
        by_adapter: list[str] = []
    except InvalidNodeConfig as exc:
        by_adapter = exc.offenders
    assert sorted(by_adapter) == sorted(by_control_plane)


def test_ethereum_managed_flags_reach_the_control_plane(
    capabilities: ExecutorCapabilities,
) -> None:
    spec = NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": "mainnet",
            "clients": {
                "execution": {"name": "geth", "version": "1"},
                "consensus": {"name": "prysm", "version": "1"},
            },
            "overrides": {
                "args": {
                    "execution": ["--datadir=/x", "--cache=1"],
                    "consensus": ["--jwt-secret=/x", "--p2p-max-peers=10"],
                }
            },
        }
    )
    assert sorted(managed_override_offenders(spec, capabilities)) == [
        "args.consensus: --jwt-secret=/x",
        "args.execution: --datadir=/x",
    ]
    ports = {p.key: 1000 + i for i, p in enumerate(ETHEREUM.ports(spec))}
    ctx = RenderContext(
        "n", NodeLayout(Path("/n")), ports, {"execution": Path("/g"), "consensus": Path("/p")}
    )
    with pytest.raises(InvalidNodeConfig) as err:
        ETHEREUM.render(spec, ctx)
    assert sorted(err.value.offenders) == sorted(managed_override_offenders(spec, capabilities))
