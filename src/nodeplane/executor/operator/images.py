"""Which container image runs each client, and the small utility image for init steps.

The defaults name each client's upstream image; an operator deployment may replace any of them
(a mirror, a pinned digest) through its settings, so the table is passed to the renderer rather
than read from here.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from nodeplane.protocol.spec import VERSION_PATTERN


@dataclass(frozen=True)
class ClientImage:
    """An image repository, its tag for a client version, and the executable inside it."""

    repository: str
    # `{version}` is replaced by the spec's client version (checked against VERSION_PATTERN).
    tag: str = "{version}"
    # The executable to run; None runs the client's binary name from the image's PATH.
    command: str | None = None

    def reference(self, version: str) -> str:
        """`repository:tag` for `version`."""
        return f"{self.repository}:{self.tag.format(version=version)}"


DEFAULT_IMAGES: Mapping[str, ClientImage] = {
    "bitcoind": ClientImage("docker.io/bitcoin/bitcoin"),
    "litecoind": ClientImage("docker.io/uphold/litecoin-core"),
    "geth": ClientImage("docker.io/ethereum/client-go", tag="v{version}"),
    "reth": ClientImage("ghcr.io/paradigmxyz/reth", tag="v{version}"),
    "erigon": ClientImage("docker.io/erigontech/erigon", tag="v{version}"),
    "nethermind": ClientImage("docker.io/nethermind/nethermind"),
    "lighthouse": ClientImage("docker.io/sigp/lighthouse", tag="v{version}"),
    "lodestar": ClientImage("docker.io/chainsafe/lodestar", tag="v{version}"),
    "prysm": ClientImage(
        "gcr.io/prysmaticlabs/prysm/beacon-chain",
        tag="v{version}",
        command="/app/cmd/beacon-chain/beacon-chain",
    ),
    "anvil": ClientImage("ghcr.io/foundry-rs/foundry", tag="v{version}"),
}

# The client versions the operator offers (its capabilities) besides an adapter's downloads:
# tags its image is published under. `nodeplane operator run --client-version CLIENT=VERSION`
# offers more.
OFFERED_VERSIONS: Mapping[str, tuple[str, ...]] = {
    "bitcoind": ("28.0", "27.1"),
    "litecoind": ("0.21.4", "0.21.3", "0.21.2.1"),
    "geth": ("1.14.12",),
    "lighthouse": ("5.3.0",),
}

# nodeplane's own image: what deploy/kubernetes/operator/deployment.yaml runs, and by default each
# node's probe sidecar (`nodeplane operator probe`; `operator run --probe-image` replaces it).
OPERATOR_IMAGE = "ghcr.io/nodeplane/nodeplane:latest"
# The sidecar's HTTP port in the pod (no client's default port: the renderer checks for a clash).
PROBE_PORT_DEFAULT = 9797

# Runs the one-time init steps (a JWT secret): needs only sh, head, od and tr.
UTILITY_IMAGE = "docker.io/library/busybox:1.36"

__all__ = [
    "DEFAULT_IMAGES",
    "OFFERED_VERSIONS",
    "OPERATOR_IMAGE",
    "PROBE_PORT_DEFAULT",
    "UTILITY_IMAGE",
    "VERSION_PATTERN",
    "ClientImage",
]
