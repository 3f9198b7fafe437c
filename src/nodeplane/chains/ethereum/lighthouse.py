"""Lighthouse (`lighthouse beacon_node`), consensus client."""

from nodeplane.chains.base import UDP_ONLY, ClientDef
from nodeplane.chains.ethereum.common import (
    CONSENSUS,
    CONSENSUS_PORTS,
    LOOPBACK,
    ClientArgs,
    ClientEnv,
    ClientRecipe,
    PortSpec,
)

CLIENT = ClientDef(
    name="lighthouse",
    binary="lighthouse",
    managed_flags=(
        "network",
        "testnet-dir",
        "t",
        "datadir",
        "d",
        "execution-endpoint",
        "execution-endpoints",
        "execution-jwt",
        "execution-jwt-secret-key",
        "http",
        "http-address",
        "http-port",
        "port",
        "discovery-port",
        "quic-port",
        "listen-address",
        "metrics",
        "metrics-address",
        "metrics-port",
        "logfile-dir",
        "reconstruct-historic-states",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "freezer-dir",
        "blobs-dir",
        "network-dir",
        "slasher-dir",
        "validator-monitor-file",
        "checkpoint-state",
        "checkpoint-block",
        "checkpoint-blobs",
        "trusted-setup-file-override",
        "http-tls-cert",
        "http-tls-key",
        "dump-config",
        "dump-chain-config",
        "invalid-gossip-verified-blocks-path",
        "logfile",
    ),
)

# QUIC is UDP alone.
PORTS = (*CONSENSUS_PORTS, PortSpec("quic", 9001, public=True, protocols=UDP_ONLY))


def arguments(env: ClientEnv) -> ClientArgs:
    """Beacon node on the Engine API with the shared JWT; checkpoint sync by default."""
    managed = [
        "beacon_node",
        f"--network={env.network}",
        f"--datadir={env.data_dir}",
        f"--execution-endpoint={env.engine_url}",
        f"--execution-jwt={env.jwt_path}",
        "--http",
        f"--http-address={LOOPBACK}",
        f"--http-port={env.port('http')}",
        f"--port={env.port('p2p')}",
        f"--discovery-port={env.port('p2p')}",
        f"--quic-port={env.port('quic')}",
        "--metrics",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={env.port('metrics')}",
    ]
    if env.archive:
        managed.append("--reconstruct-historic-states")
    defaults = [(f"--checkpoint-sync-url={env.checkpoint_url}",)] if env.checkpoint_url else []
    return ClientArgs(managed=managed, defaults=defaults)


RECIPE = ClientRecipe(client=CLIENT, role=CONSENSUS, ports=PORTS, arguments=arguments)
