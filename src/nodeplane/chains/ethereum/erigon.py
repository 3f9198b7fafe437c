"""Erigon, execution client (with an external consensus client, so Caplin is off)."""

from nodeplane.chains.base import TCP_AND_UDP, ClientDef
from nodeplane.chains.ethereum.common import (
    EXECUTION,
    EXECUTION_PORTS,
    LOOPBACK,
    ClientArgs,
    ClientEnv,
    ClientRecipe,
    PortSpec,
)

CLIENT = ClientDef(
    name="erigon",
    binary="erigon",
    managed_flags=(
        "chain",
        "datadir",
        "config",
        "externalcl",
        "internalcl",
        "prune.mode",
        "http",
        "http.addr",
        "http.port",
        "ws",
        "ws.port",
        "authrpc.addr",
        "authrpc.port",
        "authrpc.jwtsecret",
        "port",
        "p2p.allowed-ports",
        "torrent.port",
        "private.api.addr",
        "metrics",
        "metrics.addr",
        "metrics.port",
        "log.dir.path",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "nodekey",
        "pprof.cpuprofile",
        "trace",
        "cpuprofile",
        "tls.cert",
        "tls.key",
        "tls.cacert",
    ),
    stop_timeout_s=300,
)

# Erigon opens a second P2P listener for the older eth protocol version, a BitTorrent port for
# snapshot downloads and an internal gRPC API: all must differ between nodes on one host. Each P2P
# listener discovers over UDP on its own number; BitTorrent uses UDP too (uTP, DHT).
PORTS = (
    *EXECUTION_PORTS,
    PortSpec("p2p_alt", 30304, public=True, protocols=TCP_AND_UDP),
    PortSpec("torrent", 42069, public=True, protocols=TCP_AND_UDP),
    PortSpec("private_api", 9090),
)


def arguments(env: ClientEnv) -> ClientArgs:
    """External CL, explicit ports for every listener; WebSocket shares the HTTP port."""
    managed = [
        f"--chain={env.network}",
        f"--datadir={env.data_dir}",
        "--externalcl",
        f"--prune.mode={'archive' if env.archive else 'full'}",
        "--http",
        f"--http.addr={LOOPBACK}",
        f"--http.port={env.port('http')}",
        "--ws",
        f"--authrpc.addr={LOOPBACK}",
        f"--authrpc.port={env.port('engine')}",
        f"--authrpc.jwtsecret={env.jwt_path}",
        f"--port={env.port('p2p')}",
        f"--p2p.allowed-ports={env.port('p2p')},{env.port('p2p_alt')}",
        f"--torrent.port={env.port('torrent')}",
        f"--private.api.addr={LOOPBACK}:{env.port('private_api')}",
        "--metrics",
        f"--metrics.addr={LOOPBACK}",
        f"--metrics.port={env.port('metrics')}",
    ]
    return ClientArgs(managed=managed, defaults=[("--http.api=eth,erigon,net,web3",)])


RECIPE = ClientRecipe(client=CLIENT, role=EXECUTION, ports=PORTS, arguments=arguments)
