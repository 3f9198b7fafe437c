"""Fixtures for the chain adapters: real client binaries, installed on demand."""

from pathlib import Path

import pytest

from nodeplane.chains.binaries import find_binary, installed_versions
from nodeplane.chains.bitcoin_family import LITECOIND
from nodeplane.chains.ethereum import anvil
from tests.chains.support import ANVIL, ensure_chain_clients


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def chain_clients() -> None:
    """litecoind and anvil on this host (installed by scripts/install-chain-clients.sh)."""
    ensure_chain_clients()


@pytest.fixture(scope="session")
def litecoind(chain_clients: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real litecoind and its version, found the way the executor finds it."""
    empty = tmp_path_factory.mktemp("executor-data")
    versions = installed_versions(LITECOIND, empty)
    assert versions, "litecoind not found after install"
    path = find_binary(LITECOIND, versions[0], empty)
    assert path is not None
    return path, versions[0]


@pytest.fixture(scope="session")
def anvil_binary(chain_clients: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real anvil and its version, found in `<data_dir>/bin` as an executor would."""
    data_dir = tmp_path_factory.mktemp("executor-data")
    (data_dir / "bin").mkdir()
    (data_dir / "bin" / "anvil").symlink_to(ANVIL)
    versions = installed_versions(anvil.CLIENT, data_dir, path_env="")
    assert versions, "anvil not found after install"
    path = find_binary(anvil.CLIENT, versions[0], data_dir, path_env="")
    assert path is not None
    return path, versions[0]
