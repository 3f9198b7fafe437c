"""What every Ethereum client module shares: the environment it renders from and its recipe."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nodeplane.chains.base import (
    TCP_AND_UDP,
    TCP_ONLY,
    ClientDef,
    IncompleteRenderContext,
    Protocol,
)
from nodeplane.protocol import NodeType

EXECUTION = "execution"
CONSENSUS = "consensus"
LOOPBACK = "127.0.0.1"

# Generated once before first start and passed to both clients (relative to the node root).
JWT_RELATIVE_PATH = "config/jwt.hex"

# Trusted checkpoint-sync endpoints per network, overridable with the client's own flag.
CHECKPOINT_SYNC_URLS: Mapping[str, str] = {
    "mainnet": "https://mainnet.checkpoint.sigp.io",
    "sepolia": "https://checkpoint-sync.sepolia.ethpandaops.io",
    "hoodi": "https://checkpoint-sync.hoodi.ethpandaops.io",
}


@dataclass(frozen=True)
class PortSpec:
    """A port a client listens on: `name` within its role, default number, public or loopback,
    and its protocols (TCP, UDP or both on the one number)."""

    name: str
    default: int
    public: bool = False
    protocols: tuple[Protocol, ...] = TCP_ONLY


# Ports every client of a role gets; clients add their own (QUIC, BitTorrent, gRPC, ...).
# P2P is TCP plus UDP on the same number: execution clients' discv4/discv5 (geth and nethermind
# default discovery to the P2P port, reth and erigon are told so), consensus clients' discv5
# (lighthouse and lodestar get `--discovery-port` = P2P; prysm's QUIC shares the P2P number).
EXECUTION_PORTS = (
    PortSpec("http", 8545),
    PortSpec("ws", 8546),
    PortSpec("engine", 8551),
    PortSpec("p2p", 30303, public=True, protocols=TCP_AND_UDP),
    PortSpec("metrics", 6060),
)
CONSENSUS_PORTS = (
    PortSpec("http", 5052),
    PortSpec("p2p", 9000, public=True, protocols=TCP_AND_UDP),
    PortSpec("metrics", 5054),
)


@dataclass(frozen=True)
class ClientEnv:
    """Where one client of a node runs: its network, directories, JWT secret and ports."""

    network: str
    node_type: NodeType
    data_dir: Path  # this role's own data directory
    jwt_path: Path
    ports: Mapping[str, int]  # port name within the role -> allocated port
    engine_url: str = ""  # consensus clients: the execution client's Engine API

    def port(self, name: str) -> int:
        """The allocated port called `name` for this role."""
        try:
            return self.ports[name]
        except KeyError:
            raise IncompleteRenderContext(f"no port allocated for {name!r}") from None

    @property
    def archive(self) -> bool:
        """Whether the node keeps all historical state."""
        return self.node_type == NodeType.ARCHIVE

    @property
    def checkpoint_url(self) -> str | None:
        """The default checkpoint-sync URL of this network, if any."""
        return CHECKPOINT_SYNC_URLS.get(self.network)


@dataclass(frozen=True)
class ClientArgs:
    """A client's argv after the binary: managed words, then groups of overridable defaults."""

    managed: Sequence[str]
    defaults: Sequence[Sequence[str]] = ()


@dataclass(frozen=True)
class ClientRecipe:
    """How to run one client: its definition, its ports and its command line."""

    client: ClientDef
    role: str
    ports: tuple[PortSpec, ...]
    arguments: Callable[[ClientEnv], ClientArgs]
    # Sub-directory of the node's data dir for this client (None: the role name).
    data_subdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
