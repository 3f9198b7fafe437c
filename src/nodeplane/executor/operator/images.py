"""Which container image runs each client, as which user, and the small utility image for init
steps.

The defaults name each client's upstream image; an operator deployment may replace any of them
(a mirror, a pinned digest) through its settings, so the table is passed to the renderer rather
than read from here.

Users: most of these images declare no user, so they would run as root, yet their clients write
only under the data directory they are given (`--datadir` and the like, on the node's volume),
so they run as NODE_USER. Erigon's image has its own non-root user (uid 1000, made in its
Dockerfile). Nethermind's default image writes into its install directory (`/nethermind/logs`,
owned by root), so it keeps the image's root user (its `-chiseled` tags are the rootless
variant). The pod's fsGroup, NODE_GROUP, owns the volume, so every container can write it. None
of this runs here (the test cluster has no kubelet); it follows each image's Dockerfile.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from nodeplane.protocol.spec import VERSION_PATTERN

# The uid and gid the node's containers run as unless their image says otherwise (a fixed
# non-root number, so runAsNonRoot can check it without the image's /etc/passwd).
NODE_USER = 10001
NODE_GROUP = 10001


@dataclass(frozen=True)
class ClientImage:
    """An image repository, its tag for a client version, the executable inside it, and the
    user to run it as."""

    repository: str
    # `{version}` is replaced by the spec's client version (checked against VERSION_PATTERN).
    tag: str = "{version}"
    # The executable to run; None runs the client's binary name from the image's PATH.
    command: str | None = None
    # The uid to run as (the pod then checks it is not root); None: the image's own user, root.
    user: int | None = NODE_USER

    def reference(self, version: str) -> str:
        """`repository:tag` for `version`."""
        return f"{self.repository}:{self.tag.format(version=version)}"


DEFAULT_IMAGES: Mapping[str, ClientImage] = {
    "bitcoind": ClientImage("docker.io/bitcoin/bitcoin"),
    "litecoind": ClientImage("docker.io/uphold/litecoin-core"),
    "geth": ClientImage("docker.io/ethereum/client-go", tag="v{version}"),
    "reth": ClientImage("ghcr.io/paradigmxyz/reth", tag="v{version}"),
    "erigon": ClientImage("docker.io/erigontech/erigon", tag="v{version}", user=1000),
    "nethermind": ClientImage("docker.io/nethermind/nethermind", user=None),
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
# The tag is the project version; tests hold it equal to the Deployment and the Containerfile.
OPERATOR_IMAGE = "ghcr.io/nodeplane/nodeplane:0.1.0"
# The sidecar's HTTP port in the pod (no client's default port: the renderer checks for a clash).
PROBE_PORT_DEFAULT = 9797

# Runs the one-time init steps (a JWT secret): needs only sh, head, od and tr.
UTILITY_IMAGE = "docker.io/library/busybox:1.36"

__all__ = [
    "DEFAULT_IMAGES",
    "NODE_GROUP",
    "NODE_USER",
    "OFFERED_VERSIONS",
    "OPERATOR_IMAGE",
    "PROBE_PORT_DEFAULT",
    "UTILITY_IMAGE",
    "VERSION_PATTERN",
    "ClientImage",
]
