"""Ethereum adapter rendering: real flags, one JWT secret shared by EL and CL, allocated ports."""

from pathlib import Path

import pytest

from nodeplane.chains.base import (
    IncompleteRenderContext,
    NodeLayout,
    NodePlan,
    RenderContext,
    UnsupportedNodeSpec,
)
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.chains.ethereum.adapter import CONSENSUS_RECIPES, EXECUTION_RECIPES, RECIPES
from nodeplane.chains.ethereum.common import ClientEnv
from nodeplane.chains.overrides import flag_name, is_managed_flag
from nodeplane.protocol import NodeSpec, NodeType

ROOT = Path("/srv/nodeplane/nodes/eth-1")
JWT = ROOT / "config" / "jwt.hex"


def spec(
    el: str = "geth",
    cl: str | None = "lighthouse",
    network: str = "mainnet",
    node_type: str = "full",
    args: dict[str, list[str]] | None = None,
) -> NodeSpec:
    clients = {"execution": {"name": el, "version": "1.0.0"}}
    if cl:
        clients["consensus"] = {"name": cl, "version": "1.0.0"}
    return NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": network,
            "nodeType": node_type,
            "clients": clients,
            "overrides": {"args": args or {}},
        }
    )


def context(s: NodeSpec) -> RenderContext:
    """Ports numbered from 20000 in declaration order, so each one is distinct and known."""
    ports = {p.key: 20000 + i for i, p in enumerate(ETHEREUM.ports(s))}
    binaries = {role: Path(f"/opt/bin/{sel.name}") for role, sel in s.clients.items()}
    return RenderContext(node_name="eth-1", layout=NodeLayout(ROOT), ports=ports, binaries=binaries)


def render(s: NodeSpec) -> tuple[NodePlan, RenderContext]:
    ctx = context(s)
    return ETHEREUM.render(s, ctx), ctx


def argv_of(plan: NodePlan, role: str) -> tuple[str, ...]:
    return next(p.argv for p in plan.processes if p.role == role)


def test_geth_lighthouse_mainnet_full_command_lines() -> None:
    plan, ctx = render(spec())
    p = ctx.ports
    assert argv_of(plan, "execution") == (
        "/opt/bin/geth",
        "--mainnet",
        f"--datadir={ROOT}/data/execution",
        "--ipcdisable",
        "--http",
        "--http.addr=127.0.0.1",
        f"--http.port={p['execution.http']}",
        "--ws",
        "--ws.addr=127.0.0.1",
        f"--ws.port={p['execution.ws']}",
        "--authrpc.addr=127.0.0.1",
        f"--authrpc.port={p['execution.engine']}",
        "--authrpc.vhosts=localhost",
        f"--authrpc.jwtsecret={JWT}",
        f"--port={p['execution.p2p']}",
        "--metrics",
        "--metrics.addr=127.0.0.1",
        f"--metrics.port={p['execution.metrics']}",
        "--gcmode=full",
        "--syncmode=snap",
        "--http.api=eth,net,web3",
    )
    assert argv_of(plan, "consensus") == (
        "/opt/bin/lighthouse",
        "beacon_node",
        "--network=mainnet",
        f"--datadir={ROOT}/data/consensus",
        f"--execution-endpoint=http://127.0.0.1:{p['execution.engine']}",
        f"--execution-jwt={JWT}",
        "--http",
        "--http-address=127.0.0.1",
        f"--http-port={p['consensus.http']}",
        f"--port={p['consensus.p2p']}",
        f"--discovery-port={p['consensus.p2p']}",
        f"--quic-port={p['consensus.quic']}",
        "--metrics",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={p['consensus.metrics']}",
        "--checkpoint-sync-url=https://mainnet.checkpoint.sigp.io",
    )


def test_one_jwt_secret_generated_once_and_shared() -> None:
    plan, _ = render(spec())
    (step,) = plan.init_steps
    assert (step.creates, step.random_hex_bytes, step.argv) == ("config/jwt.hex", 32, ())
    assert ROOT / step.creates == JWT
    assert f"--authrpc.jwtsecret={JWT}" in argv_of(plan, "execution")
    assert f"--execution-jwt={JWT}" in argv_of(plan, "consensus")
    assert plan.files == ()
    assert set(plan.directories) >= {"config", "data", "data/execution", "data/consensus"}


def test_ports_rpc_endpoints_and_stop_settings() -> None:
    s = spec()
    plan, ctx = render(s)
    ports = {p.key: p for p in ETHEREUM.ports(s)}
    assert {k for k, p in ports.items() if p.public} == {
        "execution.p2p",
        "consensus.p2p",
        "consensus.quic",
    }
    assert ports["execution.engine"].default == 8551
    assert ports["consensus.http"].default == 5052
    el, cl = plan.processes
    assert el.rpc is not None and el.rpc.url == f"http://127.0.0.1:{ctx.ports['execution.http']}"
    assert cl.rpc is not None and cl.rpc.url == f"http://127.0.0.1:{ctx.ports['consensus.http']}"
    assert (el.stop_signal, el.stop_timeout_s) == ("SIGTERM", 300)
    assert el.working_dir == ROOT / "data" / "execution"
    assert el.network == "mainnet"


def test_every_public_address_is_p2p_and_every_other_listener_is_loopback() -> None:
    for el in EXECUTION_RECIPES:
        for cl in CONSENSUS_RECIPES:
            plan, _ = render(spec(el.client.name, cl.client.name))
            words = [w for p in plan.processes for w in p.argv]
            assert not [w for w in words if "0.0.0.0" in w]
            # Every managed flag the client renders is declared, so users cannot set it.
            for process in plan.processes:
                client = RECIPES[process.client].client
                for word in process.argv[1:]:
                    if word.startswith("-") and word.split("=", 1)[0] not in (
                        "--syncmode",
                        "--http.api",
                        "--checkpoint-sync-url",
                        "--genesis-beacon-api-url",
                        "--checkpointSyncUrl",
                    ):
                        assert is_managed_flag(client, word), (process.client, word)


@pytest.mark.parametrize("network", ["mainnet", "sepolia", "hoodi"])
@pytest.mark.parametrize("el", [r.client.name for r in EXECUTION_RECIPES])
@pytest.mark.parametrize("cl", [r.client.name for r in CONSENSUS_RECIPES])
def test_any_el_cl_pair_renders_with_distinct_ports(network: str, el: str, cl: str) -> None:
    s = spec(el, cl, network)
    plan, ctx = render(s)
    assert [p.role for p in plan.processes] == ["execution", "consensus"]
    assert len(set(ctx.ports.values())) == len(ctx.ports)
    engine = ctx.ports["execution.engine"]
    assert any(f"127.0.0.1:{engine}" in w for w in argv_of(plan, "consensus"))
    assert any(str(JWT) in w for w in argv_of(plan, "execution"))
    assert any(str(JWT) in w for w in argv_of(plan, "consensus"))
    assert any(network in w for w in argv_of(plan, "execution"))
    assert any(network in w for w in argv_of(plan, "consensus"))


def test_archive_node_flags() -> None:
    expected = {
        "geth": ["--gcmode=archive", "--syncmode=full"],
        "nethermind": ["--config=mainnet_archive"],
        "erigon": ["--prune.mode=archive"],
    }
    for el, words in expected.items():
        plan, _ = render(spec(el, node_type="archive"))
        for word in words:
            assert word in argv_of(plan, "execution"), (el, word)
    reth_full, _ = render(spec("reth"))
    reth_archive, _ = render(spec("reth", node_type="archive"))
    assert "--full" in argv_of(reth_full, "execution")
    assert "--full" not in argv_of(reth_archive, "execution")
    lighthouse, _ = render(spec(node_type="archive"))
    assert "--reconstruct-historic-states" in argv_of(lighthouse, "consensus")
    assert ETHEREUM.resource_defaults("mainnet", NodeType.ARCHIVE).storage_size == "4000Gi"
    assert ETHEREUM.resource_defaults("mainnet").storage_size == "2548Gi"


def test_user_flags_are_appended_and_replace_matching_defaults() -> None:
    plan, _ = render(
        spec(
            "geth",
            "prysm",
            "hoodi",
            args={
                "execution": ["--syncmode=full", "--cache=4096"],
                "consensus": ["--checkpoint-sync-url=https://example.invalid"],
            },
        )
    )
    el = argv_of(plan, "execution")
    assert el[-2:] == ("--syncmode=full", "--cache=4096")
    assert "--syncmode=snap" not in el
    cl = argv_of(plan, "consensus")
    assert cl[-1] == "--checkpoint-sync-url=https://example.invalid"
    # Prysm's genesis URL default goes with the checkpoint URL it belongs to.
    assert not [w for w in cl if w.startswith("--genesis-beacon-api-url")]
    plain, _ = render(spec("geth", "prysm", "hoodi"))
    url = "https://checkpoint-sync.hoodi.ethpandaops.io"
    assert f"--genesis-beacon-api-url={url}" in argv_of(plain, "consensus")
    assert "--accept-terms-of-use" in argv_of(plain, "consensus")


def test_lodestar_and_reth_subcommands_and_paths() -> None:
    plan, ctx = render(spec("reth", "lodestar", "sepolia"))
    el, cl = argv_of(plan, "execution"), argv_of(plan, "consensus")
    assert el[1] == "node"
    assert f"--log.file.directory={ROOT}/data/execution/logs" in el
    assert f"--metrics=127.0.0.1:{ctx.ports['execution.metrics']}" in el
    assert cl[1] == "beacon"
    assert f"--execution.urls=http://127.0.0.1:{ctx.ports['execution.engine']}" in cl
    assert "--checkpointSyncUrl=https://checkpoint-sync.sepolia.ethpandaops.io" in cl


def test_erigon_gets_its_own_extra_ports() -> None:
    s = spec("erigon", "lighthouse")
    plan, ctx = render(s)
    el = argv_of(plan, "execution")
    p = ctx.ports
    assert "--externalcl" in el
    assert f"--p2p.allowed-ports={p['execution.p2p']},{p['execution.p2p_alt']}" in el
    assert f"--torrent.port={p['execution.torrent']}" in el
    assert f"--private.api.addr=127.0.0.1:{p['execution.private_api']}" in el


def test_devnet_runs_anvil_alone_with_persistent_state() -> None:
    s = spec("anvil", None, "devnet")
    plan, ctx = render(s)
    (process,) = plan.processes
    assert process.argv == (
        "/opt/bin/anvil",
        "--host=127.0.0.1",
        f"--port={ctx.ports['execution.http']}",
        f"--state={ROOT}/data/anvil-state.json",
        "--block-time=1",
        "--state-interval=10",
    )
    assert plan.init_steps == ()
    assert [p.key for p in ETHEREUM.ports(s)] == ["execution.http"]


@pytest.mark.parametrize(
    ("s", "why"),
    [
        (spec("anvil", "lighthouse", "mainnet"), "no client 'anvil'"),
        (spec("geth", None, "mainnet"), "needs roles ['consensus']"),
        (spec("geth", None, "devnet"), "no client 'geth'"),
        (spec("anvil", "lighthouse", "devnet"), "no role 'consensus'"),
        (spec("geth", "lighthouse", "holesky"), "no network 'holesky'"),
    ],
)
def test_unsupported_combinations_are_refused(s: NodeSpec, why: str) -> None:
    with pytest.raises(UnsupportedNodeSpec, match=why.replace("[", r"\[").replace("]", r"\]")):
        ETHEREUM.render(s, context(s) if s.network != "holesky" else context(spec()))


def test_missing_port_is_an_executor_error() -> None:
    s = spec()
    ctx = context(s)
    ports = dict(ctx.ports)
    del ports["consensus.quic"]
    with pytest.raises(IncompleteRenderContext, match="quic"):
        ETHEREUM.render(s, RenderContext("eth-1", ctx.layout, ports, ctx.binaries))


def test_client_env_checkpoint_defaults() -> None:
    env = ClientEnv("hoodi", NodeType.FULL, ROOT, JWT, {})
    assert env.checkpoint_url == "https://checkpoint-sync.hoodi.ethpandaops.io"
    assert ClientEnv("devnet", NodeType.FULL, ROOT, JWT, {}).checkpoint_url is None
    assert flag_name("--checkpointSyncUrl=x") == "checkpointSyncUrl"
