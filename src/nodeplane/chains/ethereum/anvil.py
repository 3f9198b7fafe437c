"""Anvil (Foundry's local chain), the execution client of the `devnet` network."""

from nodeplane.chains.base import ClientDef
from nodeplane.chains.ethereum.common import (
    EXECUTION,
    LOOPBACK,
    ClientArgs,
    ClientEnv,
    ClientRecipe,
    PortSpec,
)

STATE_FILE = "anvil-state.json"

CLIENT = ClientDef(
    name="anvil",
    binary="anvil",
    managed_flags=(
        "host",
        "p",
        "port",
        "state",
        "load-state",
        "dump-state",
        "config-out",
        "ipc",
        "ipcpath",
    ),
    # Options naming a file of the user's choice: relative paths inside the data directory only.
    path_flags=(
        "init",
        "cache-path",
    ),
    stop_timeout_s=30,  # dumps its state file on SIGTERM
)


def arguments(env: ClientEnv) -> ClientArgs:
    """Loopback RPC; chain state loaded from and saved to a file in the data dir."""
    managed = [
        f"--host={LOOPBACK}",
        f"--port={env.port('http')}",
        # Loaded at start, dumped on exit and every interval: data survives stop/start, and a
        # crash loses at most one interval.
        f"--state={env.data_dir / STATE_FILE}",
    ]
    defaults = [("--block-time=1",), ("--state-interval=10",)]
    return ClientArgs(managed=managed, defaults=defaults)


RECIPE = ClientRecipe(
    client=CLIENT,
    role=EXECUTION,
    ports=(PortSpec("http", 8545),),
    arguments=arguments,
)
