"""Lodestar (`lodestar beacon`), consensus client."""

from nodeplane.chains.base import ClientDef
from nodeplane.chains.ethereum.common import (
    CONSENSUS,
    CONSENSUS_PORTS,
    LOOPBACK,
    ClientArgs,
    ClientEnv,
    ClientRecipe,
)

CLIENT = ClientDef(
    name="lodestar",
    binary="lodestar",
    managed_flags=(
        "network",
        "paramsFile",
        "rcConfig",
        "dataDir",
        "execution.urls",
        "jwt-secret",
        "jwtSecret",
        "rest",
        "rest.address",
        "rest.port",
        "port",
        "discoveryPort",
        "metrics",
        "metrics.address",
        "metrics.port",
        "logFile",
    ),
    # Options naming a file of the user's choice (compared loosely, like the managed ones).
    path_flags=(
        "checkpointState",
        "genesisStateFile",
        "peerStoreDir",
        "persistInvalidSszObjectsDir",
        "bootnodesFile",
        "dbDir",
        "beaconDir",
        "peerIdFile",
        "enrFile",
    ),
    # yargs accepts camelCase and kebab-case spellings of the same option.
    loose_flag_names=True,
    # Lodestar ships as a Node.js program; its `lodestar` launcher may be a script.
    skip_scripts=False,
)


def arguments(env: ClientEnv) -> ClientArgs:
    """Beacon node on the Engine API with the shared JWT; checkpoint sync by default."""
    managed = [
        "beacon",
        f"--network={env.network}",
        f"--dataDir={env.data_dir}",
        f"--execution.urls={env.engine_url}",
        f"--jwt-secret={env.jwt_path}",
        "--rest",
        f"--rest.address={LOOPBACK}",
        f"--rest.port={env.port('http')}",
        f"--port={env.port('p2p')}",
        f"--discoveryPort={env.port('p2p')}",
        "--metrics",
        f"--metrics.address={LOOPBACK}",
        f"--metrics.port={env.port('metrics')}",
    ]
    defaults = [(f"--checkpointSyncUrl={env.checkpoint_url}",)] if env.checkpoint_url else []
    return ClientArgs(managed=managed, defaults=defaults)


RECIPE = ClientRecipe(client=CLIENT, role=CONSENSUS, ports=CONSENSUS_PORTS, arguments=arguments)
