"""The Ethereum adapter: an execution and a consensus client wired by a shared JWT secret.

Public networks (mainnet, sepolia, hoodi) run one EL and one CL; the CL drives the EL over the
Engine API on 127.0.0.1, both authenticated with `config/jwt.hex`, generated once before the
first start. The `devnet` network runs anvil alone.
"""

from collections.abc import Mapping

import httpx

from nodeplane.chains.base import (
    ChainAdapter,
    InitStep,
    NodePlan,
    PortDef,
    ProbeResult,
    ProcessPlan,
    RenderContext,
    RoleDef,
    RpcEndpoint,
)
from nodeplane.chains.ethereum import (
    anvil,
    erigon,
    geth,
    lighthouse,
    lodestar,
    nethermind,
    prysm,
    reth,
)
from nodeplane.chains.ethereum.common import (
    CONSENSUS,
    EXECUTION,
    JWT_RELATIVE_PATH,
    LOOPBACK,
    ClientEnv,
    ClientRecipe,
)
from nodeplane.chains.ethereum.probes import probe_consensus, probe_devnet, probe_execution
from nodeplane.chains.overrides import check_overrides, merge_args
from nodeplane.protocol import NodeSpec, NodeType, ProcessStatus, ResourceDefaults

DEVNET = "devnet"
PUBLIC_NETWORKS = ("mainnet", "sepolia", "hoodi")

EXECUTION_RECIPES = (geth.RECIPE, reth.RECIPE, nethermind.RECIPE, erigon.RECIPE)
CONSENSUS_RECIPES = (lighthouse.RECIPE, prysm.RECIPE, lodestar.RECIPE)
RECIPES: Mapping[str, ClientRecipe] = {
    r.client.name: r for r in (*EXECUTION_RECIPES, *CONSENSUS_RECIPES, anvil.RECIPE)
}

_FULL: Mapping[str, ResourceDefaults] = {
    "mainnet": ResourceDefaults(cpu_request="4", memory_request="16Gi", storage_size="2548Gi"),
    "sepolia": ResourceDefaults(cpu_request="2", memory_request="8Gi", storage_size="300Gi"),
    "hoodi": ResourceDefaults(cpu_request="2", memory_request="8Gi", storage_size="300Gi"),
    DEVNET: ResourceDefaults(cpu_request="500m", memory_request="1Gi", storage_size="1Gi"),
}
_ARCHIVE: Mapping[str, ResourceDefaults] = {
    "mainnet": ResourceDefaults(cpu_request="8", memory_request="32Gi", storage_size="4000Gi"),
    "sepolia": ResourceDefaults(cpu_request="4", memory_request="16Gi", storage_size="1000Gi"),
    "hoodi": ResourceDefaults(cpu_request="4", memory_request="16Gi", storage_size="1000Gi"),
}


class EthereumAdapter(ChainAdapter):
    """Ethereum mainnet and testnets (EL + CL), and a local anvil devnet."""

    chain = "ethereum"
    networks = (*PUBLIC_NETWORKS, DEVNET)
    node_types = (NodeType.FULL, NodeType.ARCHIVE)

    def roles(self, network: str) -> tuple[RoleDef, ...]:
        """EL + CL on public networks; anvil alone on devnet."""
        if network == DEVNET:
            return (RoleDef(role=EXECUTION, clients=(anvil.CLIENT,)),)
        return (
            RoleDef(role=EXECUTION, clients=tuple(r.client for r in EXECUTION_RECIPES)),
            RoleDef(role=CONSENSUS, clients=tuple(r.client for r in CONSENSUS_RECIPES)),
        )

    def resource_defaults(
        self, network: str, node_type: NodeType = NodeType.FULL
    ) -> ResourceDefaults:
        """EL and CL together; archive nodes need several times the disk."""
        if node_type == NodeType.ARCHIVE and network in _ARCHIVE:
            return _ARCHIVE[network]
        return _FULL[network]

    def _recipes(self, spec: NodeSpec) -> dict[str, ClientRecipe]:
        return {role: RECIPES[client.name] for role, client in self.client_defs(spec).items()}

    def ports(self, spec: NodeSpec) -> tuple[PortDef, ...]:
        """Each selected client's ports, keyed `<role>.<name>`."""
        return tuple(
            PortDef(
                role=role, name=p.name, default=p.default, public=p.public, protocols=p.protocols
            )
            for role, recipe in self._recipes(spec).items()
            for p in recipe.ports
        )

    def render(self, spec: NodeSpec, ctx: RenderContext) -> NodePlan:
        """argv per role, the JWT init step, and data dirs `data/<role>`."""
        recipes = self._recipes(spec)
        check_overrides(spec, {role: r.client for role, r in recipes.items()})
        jwt_path = ctx.layout.root / JWT_RELATIVE_PATH
        engine_url = ""
        if EXECUTION in recipes and spec.network != DEVNET:
            engine_url = f"http://{LOOPBACK}:{ctx.port(f'{EXECUTION}.engine')}"
        processes = []
        for role, recipe in recipes.items():
            data_dir = ctx.layout.data_dir / role
            env = ClientEnv(
                network=spec.network,
                node_type=spec.node_type,
                data_dir=ctx.layout.data_dir if spec.network == DEVNET else data_dir,
                jwt_path=jwt_path,
                ports={p.name: ctx.port(f"{role}.{p.name}") for p in recipe.ports},
                engine_url=engine_url,
            )
            args = recipe.arguments(env)
            argv = (
                str(ctx.binary(role)),
                *merge_args(args.managed, args.defaults, spec.overrides.args.get(role, [])),
            )
            processes.append(
                ProcessPlan(
                    role=role,
                    client=recipe.client.name,
                    version=spec.clients[role].version,
                    argv=argv,
                    working_dir=env.data_dir,
                    env=dict(recipe.env),
                    stop_signal=recipe.client.stop_signal,
                    stop_timeout_s=recipe.client.stop_timeout_s,
                    rpc=RpcEndpoint(url=f"http://{LOOPBACK}:{env.port('http')}"),
                    network=spec.network,
                )
            )
        if spec.network == DEVNET:
            return NodePlan(files=(), init_steps=(), processes=tuple(processes))
        return NodePlan(
            files=(),
            init_steps=(
                InitStep(name="jwt-secret", creates=JWT_RELATIVE_PATH, random_hex_bytes=32),
            ),
            processes=tuple(processes),
            directories=("config", "data", *(f"data/{role}" for role in recipes)),
        )

    async def probe(self, process: ProcessPlan, http: httpx.AsyncClient) -> ProbeResult:
        """EL JSON-RPC, CL beacon API, or anvil's block number."""
        if process.rpc is None:
            return ProbeResult(status=ProcessStatus.STARTING, message="no RPC endpoint")
        if process.network == DEVNET:
            return await probe_devnet(http, process.rpc.url)
        if process.role == CONSENSUS:
            return await probe_consensus(http, process.rpc.url)
        return await probe_execution(http, process.rpc.url)


ETHEREUM = EthereumAdapter()
