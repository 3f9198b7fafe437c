"""Bitcoin-Core-family daemons (bitcoind, litecoind): one INI config, one process, cookie RPC.

The rendered `<chain>.conf` keeps the network selector at the top and everything else in the
network's section, because Bitcoin Core ignores network-only settings (port, rpcport, bind,
connect, ...) outside `[main]`/`[test]`/`[signet]`/`[regtest]` for non-main networks.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import httpx

from nodeplane.chains.base import (
    ChainAdapter,
    ClientDef,
    ConfigFile,
    NodePlan,
    PortDef,
    ProbeResult,
    ProcessPlan,
    RenderContext,
    RoleDef,
    RpcEndpoint,
)
from nodeplane.chains.binaries import reported_version
from nodeplane.chains.overrides import (
    ConfigValue,
    check_overrides,
    format_config_value,
)
from nodeplane.chains.rpc import RpcError, RpcUnavailable, json_rpc_batch, read_cookie
from nodeplane.protocol import NodeSpec, NodeType, ProcessStatus, ResourceDefaults
from nodeplane.protocol.override_rules import ConfigValueRule

ROLE = "node"
RPC_WARMING_UP = -28

# Settings nodeplane owns: paths and networking it allocates, RPC auth it relies on for probes,
# the network selection, and every option that runs a shell command or names a file outside
# the node's directory (DESIGN §7). Options that name a file a user may choose are in _PATHS.
_MANAGED = (
    "datadir",
    "conf",
    "includeconf",
    "chain",
    "regtest",
    "testnet",
    "testnet4",
    "signet",
    "port",
    "bind",
    "whitebind",
    "rpcport",
    "rpcbind",
    "rpcallowip",
    "rpcuser",
    "rpcpassword",
    "rpcauth",
    "rpccookiefile",
    "server",
    "daemon",
    "daemonwait",
    "printtoconsole",
    "pid",
    "debuglogfile",
    "settings",
    "blocksdir",
    "walletdir",
    "wallet",
    "loadblock",
    "blocknotify",
    "walletnotify",
    "alertnotify",
    "startupnotify",
    "shutdownnotify",
    # Runs an external signing tool (a command).
    "signer",
    # An IPC socket path (multiprocess builds).
    "ipcbind",
    # ZeroMQ endpoints: an ipc:// endpoint unlinks and creates a socket file at any path.
    "zmqpubhashblock",
    "zmqpubhashtx",
    "zmqpubrawblock",
    "zmqpubrawtx",
    "zmqpubsequence",
)
# Options naming a file the user may choose: a relative path resolves inside the network's
# data directory, so only relative paths without '..' are accepted.
_PATHS = ("asmap",)
# Bitcoin Core reads `[<section>.][no]<name>` both on the command line and in the config file.
_SECTIONS = ("main", "test", "testnet4", "signet", "regtest")


def _spellings(names: tuple[str, ...]) -> tuple[str, ...]:
    prefixes = ("", *(f"{s}." for s in _SECTIONS))
    return tuple(f"{p}{neg}{name}" for name in names for p in prefixes for neg in ("", "no"))


MANAGED_NAMES = _spellings(_MANAGED)
PATH_NAMES = _spellings(_PATHS)

BITCOIN_KNOWN_KEYS: Mapping[str, str] = {
    "dbcache": "int",
    "maxconnections": "int",
    "txindex": "bool",
    "prune": "int",
    "blockfilterindex": "any",
    "peerblockfilters": "bool",
    "coinstatsindex": "bool",
    "mempoolfullrbf": "bool",
    "assumevalid": "str",
    "par": "int",
    "maxmempool": "int",
}
LITECOIN_KNOWN_KEYS: Mapping[str, str] = {
    k: v
    for k, v in BITCOIN_KNOWN_KEYS.items()
    if k not in ("coinstatsindex", "mempoolfullrbf")  # Litecoin Core 0.21 has neither
}


def _daemon(name: str, known: Mapping[str, str], extra_dirs: tuple[str, ...] = ()) -> ClientDef:
    return ClientDef(
        name=name,
        binary=name,
        managed_flags=MANAGED_NAMES,
        managed_config_keys=MANAGED_NAMES,
        path_flags=PATH_NAMES,
        path_config_keys=PATH_NAMES,
        # Bitcoin Core cuts a config line at '#': refuse rather than silently truncate.
        config_value_rules=(ConfigValueRule.NO_HASH,),
        known_config_keys=known,
        accepts_config_files=True,
        # Flushing a large dbcache to disk on shutdown can take minutes.
        stop_signal="SIGTERM",
        stop_timeout_s=600,
        version_args=("-version",),
        extra_dirs=extra_dirs,
    )


BITCOIND = _daemon("bitcoind", BITCOIN_KNOWN_KEYS)
# Debian's litecoind package puts the daemon in /usr/lib/litecoin; /usr/bin/litecoind is a
# wrapper script that writes ~/.litecoin, which a node must never touch.
LITECOIND = _daemon("litecoind", LITECOIN_KNOWN_KEYS, extra_dirs=("/usr/lib/litecoin",))


@dataclass(frozen=True)
class NetworkParams:
    """How one network of a Bitcoin-family chain is selected, laid out and sized."""

    selector: str | None  # top-level key selecting the network (None: mainnet)
    section: str  # INI section for network-specific settings
    subdir: str  # sub-directory of the datadir holding the chain and the .cookie
    p2p_port: int
    rpc_port: int
    resources: ResourceDefaults


def _res(cpu: str, memory: str, disk: str) -> ResourceDefaults:
    return ResourceDefaults(cpu_request=cpu, memory_request=memory, storage_size=disk)


def render_conf(
    node_name: str,
    net: NetworkParams,
    rpc_port: int,
    p2p_port: int,
    onion_port: int,
    user: Mapping[str, ConfigValue],
) -> str:
    """The INI config: selector on top, managed and user settings in the network's section.

    Besides RPC and P2P, Bitcoin Core 0.21+ (and Litecoin Core) listens on a loopback port for
    inbound Tor connections, a fixed port per network unless `bind=<addr>=onion` names one: every
    node of a host would claim the same one (Litecoin's regtest onion port is even its P2P port,
    19444), and a node given that port for P2P could not start again once another node held it.
    So it is one of the node's allocated ports like the others.
    """
    lines = [f"# Rendered by nodeplane for node {node_name}; edits are overwritten."]
    if net.selector:
        lines.append(f"{net.selector}=1")
    lines += [
        "",
        f"[{net.section}]",
        "server=1",
        "rpcbind=127.0.0.1",
        "rpcallowip=127.0.0.1",
        f"rpcport={rpc_port}",
        f"port={p2p_port}",
        "bind=0.0.0.0",
        f"bind=127.0.0.1:{onion_port}=onion",
    ]
    if user:
        lines.append("# overrides")
        # Keys and values were checked: one line each, no newline, no '#'.
        lines += [f"{key}={format_config_value(value)}" for key, value in sorted(user.items())]
    return "\n".join(lines) + "\n"


def _height(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def chain_status(
    info: Mapping[str, Any], peers: Sequence[Mapping[str, Any]], *, regtest: bool
) -> ProbeResult:
    """Status and metrics from `getblockchaininfo` and `getpeerinfo` (pure).

    A fresh regtest chain reports initialblockdownload until a block is mined, so regtest is
    judged by heights alone: syncing while a peer (its starting height) or our own headers are
    ahead of our blocks. Elsewhere a peer's self-reported height is not trusted; IBD and
    headers > blocks decide.
    """
    blocks = _height(info.get("blocks"))
    headers = max(_height(info.get("headers")), blocks)
    peer_heights = [
        max(
            _height(p.get("synced_headers")),
            _height(p.get("synced_blocks")),
            _height(p.get("startingheight")) if regtest else -1,
        )
        for p in peers
    ]
    network_height = max([headers, *peer_heights])
    if regtest:
        syncing = blocks < network_height
        progress = blocks / network_height if syncing and network_height > 0 else 1.0
    else:
        syncing = bool(info.get("initialblockdownload")) or blocks < headers
        raw = info.get("verificationprogress")
        progress = min(max(float(raw), 0.0), 1.0) if isinstance(raw, int | float) else 0.0
    return ProbeResult(
        status=ProcessStatus.SYNCING if syncing else ProcessStatus.RUNNING,
        height=max(blocks, 0),
        network_height=max(network_height, 0),
        peers=len(peers),
        sync_progress=max(progress, 0.0),
    )


class BitcoinFamilyAdapter(ChainAdapter):
    """One `node` role running a Bitcoin Core descendant."""

    client: ClassVar[ClientDef]
    params: ClassVar[Mapping[str, NetworkParams]]
    conf_name: ClassVar[str]

    def roles(self, network: str) -> tuple[RoleDef, ...]:
        """The single `node` role."""
        return (RoleDef(role=ROLE, clients=(self.client,)),)

    def resource_defaults(
        self, network: str, node_type: NodeType = NodeType.FULL
    ) -> ResourceDefaults:
        """Per-network defaults (full nodes only)."""
        return self.params[network].resources

    def ports(self, spec: NodeSpec) -> tuple[PortDef, ...]:
        """RPC and the Tor inbound port on loopback, P2P on all interfaces; defaults are the
        network's usual ports (Bitcoin Core's convention for Tor: the P2P port plus one)."""
        net = self.params[spec.network]
        return (
            PortDef(role=ROLE, name="rpc", default=net.rpc_port),
            PortDef(role=ROLE, name="p2p", default=net.p2p_port, public=True),
            PortDef(role=ROLE, name="onion", default=net.p2p_port + 1),
        )

    def render(self, spec: NodeSpec, ctx: RenderContext) -> NodePlan:
        """`<chain>.conf` plus `[binary, -datadir, -conf, -printtoconsole=1, *user flags]`."""
        clients = self.client_defs(spec)
        check_overrides(spec, clients)
        net = self.params[spec.network]
        rpc_port = ctx.port(f"{ROLE}.rpc")
        data_dir = ctx.layout.data_dir
        conf_path = ctx.layout.config_dir / self.conf_name
        conf = render_conf(
            ctx.node_name,
            net,
            rpc_port,
            ctx.port(f"{ROLE}.p2p"),
            ctx.port(f"{ROLE}.onion"),
            spec.overrides.files.get(ROLE, {}),
        )
        argv = (
            str(ctx.binary(ROLE)),
            f"-datadir={data_dir}",
            f"-conf={conf_path}",
            "-printtoconsole=1",
            *spec.overrides.args.get(ROLE, []),
        )
        client = clients[ROLE]
        process = ProcessPlan(
            role=ROLE,
            client=client.name,
            version=spec.clients[ROLE].version,
            argv=argv,
            working_dir=data_dir,
            stop_signal=client.stop_signal,
            stop_timeout_s=client.stop_timeout_s,
            rpc=RpcEndpoint(
                url=f"http://127.0.0.1:{rpc_port}/",
                cookie_file=data_dir / net.subdir / ".cookie",
            ),
            network=spec.network,
        )
        return NodePlan(
            files=(ConfigFile(relative_path=self.conf_name, content=conf),),
            init_steps=(),
            processes=(process,),
            directories=("config", "data"),
        )

    async def probe(self, process: ProcessPlan, http: httpx.AsyncClient) -> ProbeResult:
        """`getblockchaininfo`, `getpeerinfo` and `getnetworkinfo` in one cookie-authenticated
        JSON-RPC batch."""
        if process.rpc is None:
            return ProbeResult(status=ProcessStatus.STARTING, message="no RPC endpoint")
        url = process.rpc.url
        try:
            auth = read_cookie(process.rpc.cookie_file) if process.rpc.cookie_file else None
            info, peers, network = await json_rpc_batch(
                http, url, ("getblockchaininfo", "getpeerinfo", "getnetworkinfo"), auth=auth
            )
        except RpcError as exc:
            message = exc.message if exc.code == RPC_WARMING_UP else str(exc)
            return ProbeResult(status=ProcessStatus.STARTING, message=message)
        except RpcUnavailable as exc:
            return ProbeResult(status=ProcessStatus.STARTING, message=str(exc))
        if not isinstance(info, dict) or not isinstance(peers, list):
            return ProbeResult(status=ProcessStatus.STARTING, message="unexpected RPC answer")
        status = chain_status(
            info, [p for p in peers if isinstance(p, dict)], regtest=process.network == "regtest"
        )
        # `subversion` is "/LitecoinCore:0.21.2.1/": the version that actually runs.
        subversion = network.get("subversion") if isinstance(network, dict) else None
        version = reported_version(subversion)
        return replace(status, client_version=version) if version else status


class BitcoinAdapter(BitcoinFamilyAdapter):
    """Bitcoin Core (`bitcoind`)."""

    chain = "bitcoin"
    networks = ("mainnet", "testnet", "signet", "regtest")
    client = BITCOIND
    conf_name = "bitcoin.conf"
    params = {
        "mainnet": NetworkParams(None, "main", "", 8333, 8332, _res("2", "4Gi", "600Gi")),
        "testnet": NetworkParams(
            "testnet", "test", "testnet3", 18333, 18332, _res("2", "4Gi", "600Gi")
        ),
        "signet": NetworkParams(
            "signet", "signet", "signet", 38333, 38332, _res("1", "2Gi", "20Gi")
        ),
        "regtest": NetworkParams(
            "regtest", "regtest", "regtest", 18444, 18443, _res("500m", "512Mi", "1Gi")
        ),
    }


class LitecoinAdapter(BitcoinFamilyAdapter):
    """Litecoin Core (`litecoind`)."""

    chain = "litecoin"
    networks = ("mainnet", "testnet", "regtest")
    client = LITECOIND
    conf_name = "litecoin.conf"
    params = {
        "mainnet": NetworkParams(None, "main", "", 9333, 9332, _res("2", "4Gi", "300Gi")),
        "testnet": NetworkParams(
            "testnet", "test", "testnet4", 19335, 19332, _res("1", "2Gi", "60Gi")
        ),
        "regtest": NetworkParams(
            "regtest", "regtest", "regtest", 19444, 19443, _res("500m", "512Mi", "1Gi")
        ),
    }


BITCOIN = BitcoinAdapter()
LITECOIN = LitecoinAdapter()
