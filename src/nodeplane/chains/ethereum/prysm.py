"""Prysm (`beacon-chain`), consensus client."""

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
    name="prysm",
    binary="beacon-chain",
    managed_flags=(
        "mainnet",
        "sepolia",
        "hoodi",
        "holesky",
        "chain-config-file",
        "config-file",
        "datadir",
        "accept-terms-of-use",
        "execution-endpoint",
        "jwt-secret",
        "http-host",
        "http-port",
        "grpc-gateway-host",
        "grpc-gateway-port",
        "rpc-host",
        "rpc-port",
        "p2p-tcp-port",
        "p2p-udp-port",
        "p2p-quic-port",
        "monitoring-host",
        "monitoring-port",
        "log-file",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "genesis-state",
        "checkpoint-state",
        "checkpoint-block",
        "p2p-priv-key",
        "p2p-metadata",
        "tls-cert",
        "tls-key",
        "db-backup-output-dir",
        "slasher-datadir",
        "blob-path",
        "cpuprofile",
        "trace",
        "bootstrap-node",
        "restore-source-file",
        "restore-target-dir",
    ),
)

# QUIC shares the P2P port number over UDP; discv5 needs a UDP port of its own, and Prysm's
# gRPC API for validator clients listens on loopback.
PORTS = (
    *CONSENSUS_PORTS,
    PortSpec("discovery", 12000, public=True, protocols=UDP_ONLY),
    PortSpec("grpc", 4000),
)


def arguments(env: ClientEnv) -> ClientArgs:
    """Beacon node on the Engine API with the shared JWT; checkpoint and genesis from one URL."""
    managed = [
        f"--{env.network}",
        f"--datadir={env.data_dir}",
        "--accept-terms-of-use",  # else it prompts on first start, which a unit cannot answer
        f"--execution-endpoint={env.engine_url}",
        f"--jwt-secret={env.jwt_path}",
        f"--http-host={LOOPBACK}",
        f"--http-port={env.port('http')}",
        f"--rpc-host={LOOPBACK}",
        f"--rpc-port={env.port('grpc')}",
        f"--p2p-tcp-port={env.port('p2p')}",
        f"--p2p-quic-port={env.port('p2p')}",
        f"--p2p-udp-port={env.port('discovery')}",
        f"--monitoring-host={LOOPBACK}",
        f"--monitoring-port={env.port('metrics')}",
    ]
    url = env.checkpoint_url
    defaults = [(f"--checkpoint-sync-url={url}", f"--genesis-beacon-api-url={url}")] if url else []
    return ClientArgs(managed=managed, defaults=defaults)


RECIPE = ClientRecipe(client=CLIENT, role=CONSENSUS, ports=PORTS, arguments=arguments)
