"""go-ethereum (`geth`), execution client."""

from nodeplane.chains.base import ClientDef
from nodeplane.chains.ethereum.common import (
    EXECUTION,
    EXECUTION_PORTS,
    LOOPBACK,
    ClientArgs,
    ClientEnv,
    ClientRecipe,
)

CLIENT = ClientDef(
    name="geth",
    binary="geth",
    managed_flags=(
        "mainnet",
        "sepolia",
        "hoodi",
        "holesky",
        "dev",
        "config",
        "datadir",
        "datadir.ancient",
        "datadir.era",
        "keystore",
        "password",
        "ipcdisable",
        "ipcpath",
        "log.file",
        "jspath",
        "preload",
        "exec",
        "http",
        "http.addr",
        "http.port",
        "ws",
        "ws.addr",
        "ws.port",
        "authrpc.addr",
        "authrpc.port",
        "authrpc.vhosts",
        "authrpc.jwtsecret",
        "port",
        "discovery.port",
        "metrics",
        "metrics.addr",
        "metrics.port",
        "gcmode",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "nodekey",
        "txpool.journal",
        "blobpool.datadir",
        "cache.trie.journal",
        "pprof.cpuprofile",
        "trace",
        "go-execution-trace",
        "beacon.checkpoint.file",
        "pcscdpath",
        "signer",
        "synctarget",
    ),
    stop_timeout_s=300,  # geth flushes its caches to disk on SIGTERM
)


def arguments(env: ClientEnv) -> ClientArgs:
    """Network, datadir, loopback RPC/WS/Engine, P2P port, metrics; archive keeps all state."""
    managed = [
        f"--{env.network}",
        f"--datadir={env.data_dir}",
        "--ipcdisable",  # a socket path under a deep data dir can exceed the 108-byte limit
        "--http",
        f"--http.addr={LOOPBACK}",
        f"--http.port={env.port('http')}",
        "--ws",
        f"--ws.addr={LOOPBACK}",
        f"--ws.port={env.port('ws')}",
        f"--authrpc.addr={LOOPBACK}",
        f"--authrpc.port={env.port('engine')}",
        "--authrpc.vhosts=localhost",
        f"--authrpc.jwtsecret={env.jwt_path}",
        f"--port={env.port('p2p')}",
        "--metrics",
        f"--metrics.addr={LOOPBACK}",
        f"--metrics.port={env.port('metrics')}",
        f"--gcmode={'archive' if env.archive else 'full'}",
    ]
    defaults = [
        # Archive state can only be built by executing every block.
        ("--syncmode=full",) if env.archive else ("--syncmode=snap",),
        ("--http.api=eth,net,web3",),
    ]
    return ClientArgs(managed=managed, defaults=defaults)


RECIPE = ClientRecipe(client=CLIENT, role=EXECUTION, ports=EXECUTION_PORTS, arguments=arguments)
