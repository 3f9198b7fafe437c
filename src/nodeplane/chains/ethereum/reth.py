"""Reth (`reth node`), execution client."""

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
    name="reth",
    binary="reth",
    managed_flags=(
        "chain",
        "datadir",
        "config",
        "instance",
        "with-unused-ports",
        "p2p-secret-key",
        "ipcdisable",
        "ipcpath",
        "auth-ipc",
        "auth-ipc.path",
        "log.file.directory",
        "http",
        "http.addr",
        "http.port",
        "ws",
        "ws.addr",
        "ws.port",
        "authrpc.addr",
        "authrpc.port",
        "authrpc.jwtsecret",
        "port",
        "addr",
        "discovery.port",
        "discovery.addr",
        "metrics",
        "full",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "datadir.static-files",
        "datadir.static_files",
        "rpc.jwtsecret",
        "peers-file",
        "debug.engine-api-store",
        "txpool.transactions-backup",
        "txpool.transactions_backup",
        "era.path",
    ),
    stop_timeout_s=300,
)


def arguments(env: ClientEnv) -> ClientArgs:
    """`node` subcommand; reth is an archive node unless told `--full`."""
    managed = [
        "node",
        f"--chain={env.network}",
        f"--datadir={env.data_dir}",
        # Reth logs to ~/.cache/reth by default: keep every file inside the node's directory.
        f"--log.file.directory={env.data_dir / 'logs'}",
        "--ipcdisable",
        "--http",
        f"--http.addr={LOOPBACK}",
        f"--http.port={env.port('http')}",
        "--ws",
        f"--ws.addr={LOOPBACK}",
        f"--ws.port={env.port('ws')}",
        f"--authrpc.addr={LOOPBACK}",
        f"--authrpc.port={env.port('engine')}",
        f"--authrpc.jwtsecret={env.jwt_path}",
        f"--port={env.port('p2p')}",
        f"--discovery.port={env.port('p2p')}",
        f"--metrics={LOOPBACK}:{env.port('metrics')}",
    ]
    if not env.archive:
        managed.append("--full")
    return ClientArgs(managed=managed, defaults=[("--http.api=eth,net,web3",)])


RECIPE = ClientRecipe(client=CLIENT, role=EXECUTION, ports=EXECUTION_PORTS, arguments=arguments)
