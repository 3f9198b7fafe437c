"""What the adapters declare (path options, value rules, managed settings) is what both sides
enforce: the executor when it renders, the control plane from the capabilities it was sent.

Each table row is checked twice — by the adapter's render (the executor's re-check) and by the
protocol function the control plane applies to the adapter's own capabilities — and the two must
name the same offenders.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeplane.chains.base import (
    ChainAdapter,
    ClientDef,
    InvalidNodeConfig,
    NodeLayout,
    RenderContext,
)
from nodeplane.chains.bitcoin_family import BITCOIN, LITECOIN
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.installed import ADAPTERS, build_capabilities
from nodeplane.protocol import ExecutorCapabilities, NodeSpec, override_problems
from tests.support.fleet import CAPABILITIES

ROOT = Path("/srv/nodeplane/nodes/n-1")


@dataclass(frozen=True)
class Target:
    """One client of one adapter, with a spec shape that selects it."""

    adapter: ChainAdapter
    network: str
    role: str
    client: ClientDef
    clients: dict[str, str]  # role -> client name


def targets() -> list[Target]:
    out: list[Target] = []
    for adapter in (BITCOIN, LITECOIN):
        out.append(
            Target(adapter, "regtest", "node", adapter.client, {"node": adapter.client.name})
        )
    roles = {r.role: r for r in ETHEREUM.roles("mainnet")}
    for el in roles["execution"].clients:
        out.append(
            Target(
                ETHEREUM,
                "mainnet",
                "execution",
                el,
                {"execution": el.name, "consensus": "lighthouse"},
            )
        )
    for cl in roles["consensus"].clients:
        out.append(
            Target(
                ETHEREUM, "mainnet", "consensus", cl, {"execution": "geth", "consensus": cl.name}
            )
        )
    anvil = ETHEREUM.roles("devnet")[0].clients[0]
    out.append(Target(ETHEREUM, "devnet", "execution", anvil, {"execution": "anvil"}))
    return out


TARGETS = targets()


def spec_for(
    t: Target, args: list[str] | None = None, files: dict[str, object] | None = None
) -> NodeSpec:
    return NodeSpec.model_validate(
        {
            "chain": t.adapter.chain,
            "network": t.network,
            "clients": {
                role: {"name": name, "version": "1.0.0"} for role, name in t.clients.items()
            },
            "overrides": {
                "args": {t.role: args or []},
                "files": {t.role: files or {}} if files else {},
            },
        }
    )


def context(t: Target, s: NodeSpec) -> RenderContext:
    ports = {p.key: 20000 + i for i, p in enumerate(t.adapter.ports(s))}
    binaries = {role: Path(f"/bin/{name}") for role, name in t.clients.items()}
    return RenderContext("n-1", NodeLayout(ROOT), ports, binaries)


def capabilities() -> ExecutorCapabilities:
    chains = [adapter.capability({}) for adapter in ADAPTERS]
    for chain in chains:
        for role in chain.roles:
            for client in role.clients:
                client.versions.append("1.0.0")
    return ExecutorCapabilities(chains=chains)


CAPS = capabilities()


def executor_offenders(t: Target, s: NodeSpec) -> list[str]:
    try:
        t.adapter.render(s, context(t, s))
    except InvalidNodeConfig as err:
        return sorted(err.offenders)
    return []


def control_plane_offenders(s: NodeSpec) -> list[str]:
    return sorted(override_problems(s, CAPS))


def ids(t: Target) -> str:
    return f"{t.adapter.chain}-{t.client.name}"


HOSTILE_PATHS = ["/etc/shadow", "../../../etc/shadow", "~/x", "$HOME/x", "a/../../b", ""]


@pytest.mark.parametrize("t", TARGETS, ids=ids)
def test_every_declared_path_flag_is_confined_on_both_sides(t: Target) -> None:
    assert t.client.path_flags, f"{t.client.name} declares no path option"
    for name in t.client.path_flags:
        for value in HOSTILE_PATHS:
            flag = f"--{name}={value}"
            s = spec_for(t, args=[flag])
            expected = [f"args.{t.role}: {flag}"]
            assert executor_offenders(t, s) == expected, flag
            assert control_plane_offenders(s) == expected, flag
        bare = spec_for(t, args=[f"--{name}"])
        assert (
            executor_offenders(t, bare)
            == control_plane_offenders(bare)
            == [f"args.{t.role}: --{name}"]
        )
        fine = spec_for(t, args=[f"--{name}=inside/file.dat"])
        assert executor_offenders(t, fine) == control_plane_offenders(fine) == []


@pytest.mark.parametrize("t", TARGETS, ids=ids)
def test_path_options_are_not_also_managed(t: Target) -> None:
    assert not set(t.client.path_flags) & set(t.client.managed_flags)
    assert not set(t.client.path_config_keys) & set(t.client.managed_config_keys)


def test_asmap_outside_the_node_is_refused_as_flag_and_config_key() -> None:
    t = next(t for t in TARGETS if t.client.name == "litecoind")
    for flag in ("-asmap=/etc/shadow", "-regtest.asmap=/etc/shadow", "-main.asmap=../x"):
        s = spec_for(t, args=[flag])
        assert executor_offenders(t, s) == control_plane_offenders(s) == [f"args.node: {flag}"]
    s = spec_for(t, files={"asmap": "/etc/shadow", "test.asmap": "~/x"})
    expected = ["files.node.asmap", "files.node.test.asmap"]
    assert executor_offenders(t, s) == control_plane_offenders(s) == expected
    ok = spec_for(t, args=["-asmap=ip_asn.map"], files={"asmap": "ip_asn.map"})
    assert executor_offenders(t, ok) == control_plane_offenders(ok) == []
    plan = t.adapter.render(ok, context(t, ok))
    assert "-asmap=ip_asn.map" in plan.processes[0].argv


@pytest.mark.parametrize("adapter", [BITCOIN, LITECOIN], ids=lambda a: a.chain)
def test_hash_in_a_bitcoin_config_value_is_refused_on_both_sides(adapter: ChainAdapter) -> None:
    t = next(t for t in TARGETS if t.adapter is adapter)
    s = spec_for(t, files={"uacomment": "a#b", "dbcache": 300})
    assert executor_offenders(t, s) == control_plane_offenders(s) == ["files.node.uacomment"]
    assert control_plane_offenders(spec_for(t, files={"uacomment": "a b"})) == []


@pytest.mark.parametrize(
    ("client", "flag"),
    [
        ("bitcoind", "-zmqpubrawblock=ipc:///root/.ssh/authorized_keys"),
        ("bitcoind", "-signer=/bin/sh"),
        ("nethermind", "--Init.BaseDbPath=/etc"),
        ("nethermind", "--KeyStore.PasswordFiles=/etc/shadow"),
    ],
)
def test_options_that_cannot_be_confined_are_managed(client: str, flag: str) -> None:
    t = next(t for t in TARGETS if t.client.name == client)
    s = spec_for(t, args=[flag])
    assert executor_offenders(t, s) == control_plane_offenders(s) == [f"args.{t.role}: {flag}"]


def test_flags_only_clients_refuse_config_files_on_both_sides() -> None:
    t = next(t for t in TARGETS if t.client.name == "geth")
    s = spec_for(t, files={"cache": 4096})
    assert executor_offenders(t, s) == control_plane_offenders(s) == ["files.execution.cache"]


@pytest.mark.chain  # asks this host's installed clients for their versions
def test_the_real_capabilities_and_the_test_fixture_pass_the_wire_rules() -> None:
    # What a real agent sends (with every version it can download) and what the test fleet sends.
    for caps in (build_capabilities(ROOT, adapters=ADAPTERS), CAPS, CAPABILITIES):
        assert ExecutorCapabilities.model_validate(caps.to_wire()) == caps


def test_the_real_capabilities_with_installed_clients(
    litecoind: tuple[Path, str], tmp_path: Path
) -> None:
    caps = build_capabilities(tmp_path, adapters=ADAPTERS)
    versions = {c.name: c.versions for chain in caps.chains for r in chain.roles for c in r.clients}
    assert litecoind[1] in versions["litecoind"]
    assert ExecutorCapabilities.model_validate(caps.to_wire()) == caps
