"""Nethermind, execution client."""

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
    name="nethermind",
    binary="nethermind",
    # Nethermind matches option names case-insensitively and also takes kebab-case
    # (`--jsonrpc-port`); the adapter compares loosely, the list names both spellings so the
    # control plane's exact match catches the common ones too.
    loose_flag_names=True,
    managed_flags=(
        "c",
        "config",
        "cd",
        "configsDirectory",
        "dd",
        "data-dir",
        "datadir",
        "d",
        "baseDbPath",
        "JsonRpc.Enabled",
        "jsonrpc-enabled",
        "JsonRpc.Host",
        "jsonrpc-host",
        "JsonRpc.Port",
        "jsonrpc-port",
        "JsonRpc.WebSocketsPort",
        "jsonrpc-websocketsport",
        "JsonRpc.EngineHost",
        "jsonrpc-enginehost",
        "JsonRpc.EnginePort",
        "jsonrpc-engineport",
        "JsonRpc.JwtSecretFile",
        "jsonrpc-jwtsecretfile",
        "JsonRpc.IpcUnixDomainSocketPath",
        "jsonrpc-ipcunixdomainsocketpath",
        "Network.P2PPort",
        "network-p2pport",
        "Network.DiscoveryPort",
        "network-discoveryport",
        "Metrics.Enabled",
        "metrics-enabled",
        "Metrics.ExposeHost",
        "metrics-exposehost",
        "Metrics.ExposePort",
        "metrics-exposeport",
        "KeyStore.KeyStoreDirectory",
        "keystore-keystoredirectory",
        # The database location under its config name, and password files (a list of paths).
        "Init.BaseDbPath",
        "KeyStore.PasswordFiles",
    ),
    # Options naming a file of the user's choice (compared loosely, like the managed ones).
    path_flags=(
        "Init.ChainSpecPath",
        "Init.StaticNodesPath",
        "Init.TrustedNodesPath",
        "Init.LogDirectory",
        "Init.LogFileName",
        "loggerConfigSource",
        "lcs",
        "pluginsDirectory",
        "pd",
        "KeyStore.EnodeKeyFile",
        "Snapshot.SnapshotDirectory",
        "Era.ImportDirectory",
        "Era.ExportDirectory",
        "JsonRpc.RpcRecorderBaseFilePath",
    ),
    stop_timeout_s=300,
)


def arguments(env: ClientEnv) -> ClientArgs:
    """Built-in network config (`<network>_archive` for archive nodes) and explicit ports."""
    config = f"{env.network}_archive" if env.archive else env.network
    managed = [
        f"--config={config}",
        f"--data-dir={env.data_dir}",
        "--JsonRpc.Enabled=true",
        f"--JsonRpc.Host={LOOPBACK}",
        f"--JsonRpc.Port={env.port('http')}",
        f"--JsonRpc.WebSocketsPort={env.port('ws')}",
        f"--JsonRpc.EngineHost={LOOPBACK}",
        f"--JsonRpc.EnginePort={env.port('engine')}",
        f"--JsonRpc.JwtSecretFile={env.jwt_path}",
        f"--Network.P2PPort={env.port('p2p')}",
        f"--Network.DiscoveryPort={env.port('p2p')}",
        "--Metrics.Enabled=true",
        f"--Metrics.ExposeHost={LOOPBACK}",
        f"--Metrics.ExposePort={env.port('metrics')}",
    ]
    return ClientArgs(managed=managed)


RECIPE = ClientRecipe(client=CLIENT, role=EXECUTION, ports=EXECUTION_PORTS, arguments=arguments)
