"""The adapters this executor offers (an explicit tuple, no registry) and its capabilities."""

from collections.abc import Iterable, Sequence
from pathlib import Path

from nodeplane.chains.base import ChainAdapter
from nodeplane.chains.binaries import installed_versions
from nodeplane.chains.bitcoin_family import BITCOIN, LITECOIN
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.protocol import ExecutorCapabilities

ADAPTERS: tuple[ChainAdapter, ...] = (BITCOIN, LITECOIN, ETHEREUM)


def adapter_for(chain: str, adapters: Sequence[ChainAdapter] = ADAPTERS) -> ChainAdapter | None:
    """The adapter of `chain`, if this executor has one."""
    return next((a for a in adapters if a.chain == chain), None)


def client_versions(
    adapter: ChainAdapter, data_dir: Path, path_env: str | None = None
) -> dict[str, tuple[str, ...]]:
    """Versions of each of the adapter's clients present on this host (client -> versions)."""
    versions: dict[str, tuple[str, ...]] = {}
    for network in adapter.networks:
        for role in adapter.roles(network):
            for client in role.clients:
                if client.name not in versions:
                    versions[client.name] = installed_versions(client, data_dir, path_env)
    return versions


def build_capabilities(
    data_dir: Path,
    *,
    adapters: Sequence[ChainAdapter] = ADAPTERS,
    storage_classes: Iterable[str] = (),
    path_env: str | None = None,
) -> ExecutorCapabilities:
    """What this executor can run: every adapter, with installed and downloadable versions.

    Runs each found binary's `--version` once (cached per file), so call it from a thread.
    """
    return ExecutorCapabilities(
        chains=[
            adapter.capability(client_versions(adapter, data_dir, path_env)) for adapter in adapters
        ],
        storage_classes=list(storage_classes),
    )
