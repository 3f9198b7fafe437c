"""Finding client binaries, reading their versions, and verified downloads from a local server."""

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.chains.base import ClientDef, Download
from nodeplane.chains.binaries import (
    BinaryNotFound,
    ChecksumMismatch,
    DownloadError,
    candidates,
    detect_version,
    download_binary,
    download_path,
    find_binary,
    installed_versions,
    parse_version,
    reported_version,
    resolve_binary,
)
from nodeplane.chains.bitcoin_family import LITECOIND


@pytest.mark.parametrize(
    ("output", "version"),
    [
        (
            "Litecoin Core version v0.21.2.1-gfce5d459f0a83f56a83059c5c6\nCopyright (C) 2011-2022",
            "0.21.2.1",
        ),
        ("Bitcoin Core version v27.1.0\nCopyright (C) 2009-2024", "27.1.0"),
        ("Geth\nVersion: 1.15.11-stable\nGit Commit: 36b2371c", "1.15.11"),
        ("geth version 1.15.11-stable-36b2371c", "1.15.11"),
        ("Lighthouse v7.0.1-e42406d\nBLS library: blst-portable", "7.0.1"),
        ("beacon-chain-v6.0.4-9b2d9b0c8d4 built at: 2025-05-20", "6.0.4"),
        ("anvil Version: 1.7.1\nCommit SHA: 4072e48705af", "1.7.1"),
        ("reth Version: 1.3.12\nCommit SHA: abc", "1.3.12"),
        ("Version: 1.31.10+a6f9c6c1\nCommit: a6f9c6c1", "1.31.10"),
        ("no version here", None),
    ],
)
def test_parse_version(output: str, version: str | None) -> None:
    assert parse_version(output) == version


def fake_binary(path: Path, version: str, *, executable: bool = True) -> Path:
    """A tiny executable that prints a version, like `<client> --version`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho 'fakechain version v{version}'\n")
    path.chmod(0o755 if executable else 0o644)
    return path


FAKE = ClientDef(name="fake", binary="fakechaind", skip_scripts=False)


@pytest.mark.process  # runs the found executables for their versions
def test_search_order_data_dir_then_extra_dirs_then_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    own = fake_binary(data / "bin" / "fakechaind", "1.0.0")
    downloaded = fake_binary(data / "bin" / "fakechaind-0.9.0", "0.9.0")
    extra = fake_binary(tmp_path / "extra" / "fakechaind", "2.0.0")
    on_path = fake_binary(tmp_path / "path1" / "fakechaind", "3.0.0")
    fake_binary(tmp_path / "path2" / "fakechaind", "4.0.0", executable=False)
    (tmp_path / "path3").mkdir()
    (tmp_path / "path3" / "fakechaind").symlink_to(on_path)  # same file twice: listed once
    client = ClientDef(
        name="fake", binary="fakechaind", extra_dirs=(str(tmp_path / "extra"),), skip_scripts=False
    )
    path_env = ":".join(str(tmp_path / d) for d in ("path1", "path2", "path3"))
    assert candidates(client, data, path_env) == [own, downloaded, extra, on_path]
    assert installed_versions(client, data, path_env) == ("3.0.0", "2.0.0", "1.0.0", "0.9.0")
    assert find_binary(client, "2.0.0", data, path_env) == extra
    assert find_binary(client, "v3.0.0", data, path_env) == on_path
    assert find_binary(client, "9.9.9", data, path_env) is None


def test_scripts_are_skipped_for_native_clients(tmp_path: Path) -> None:
    fake_binary(tmp_path / "bin" / "fakechaind", "1.0.0")
    native = ClientDef(name="fake", binary="fakechaind")
    assert candidates(native, tmp_path / "data", str(tmp_path / "bin")) == []


@pytest.mark.process  # runs the found executables for their versions
def test_version_is_cached_per_file_and_refreshed_when_it_changes(tmp_path: Path) -> None:
    path = fake_binary(tmp_path / "fakechaind", "1.0.0")
    assert detect_version(path, FAKE) == "1.0.0"
    fake_binary(path, "1.0.10")  # new content, new size
    assert detect_version(path, FAKE) == "1.0.10"


def test_debian_litecoind_is_found_directly_not_through_its_wrapper(
    litecoind: tuple[Path, str], tmp_path: Path
) -> None:
    path, version = litecoind
    assert path == Path("/usr/lib/litecoin/litecoind")
    assert version == "0.21.2.1"
    found = candidates(LITECOIND, tmp_path, "/usr/bin:/usr/local/bin")
    assert found[0] == Path("/usr/lib/litecoin/litecoind")
    assert Path("/usr/bin/litecoind") not in found  # a shell wrapper writing ~/.litecoin


class _Server:
    def __init__(self, root: Path) -> None:
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, _Server]]:
    """A directory served over HTTP on 127.0.0.1 (no internet here)."""
    root = tmp_path / "served"
    root.mkdir()
    server = _Server(root)
    yield root, server
    server.httpd.shutdown()
    server.httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.process  # runs the found executables for their versions
def test_download_with_good_checksum_installs_an_executable(
    served: tuple[Path, _Server], tmp_path: Path
) -> None:
    root, server = served
    payload = fake_binary(root / "fakechaind", "5.1.0").read_bytes()
    data = tmp_path / "data"
    client = ClientDef(
        name="fake",
        binary="fakechaind",
        skip_scripts=False,
        downloads={"5.1.0": Download(url=server.url("fakechaind"), sha256=sha256(payload).upper())},
    )
    path = resolve_binary(client, "5.1.0", data, path_env="")
    assert path == download_path(client, "5.1.0", data) == data / "bin" / "fakechaind-5.1.0"
    assert path.read_bytes() == payload
    assert path.stat().st_mode & 0o777 == 0o755
    assert detect_version(path, client) == "5.1.0"
    assert sorted(p.name for p in (data / "bin").iterdir()) == ["fakechaind-5.1.0"]
    # Found locally from now on, and offered in the capabilities.
    assert find_binary(client, "5.1.0", data, path_env="") == path
    assert installed_versions(client, data, path_env="") == ("5.1.0",)


def test_download_with_bad_checksum_is_refused_and_leaves_nothing(
    served: tuple[Path, _Server], tmp_path: Path
) -> None:
    root, server = served
    fake_binary(root / "fakechaind", "5.1.0")
    data = tmp_path / "data"
    client = ClientDef(
        name="fake",
        binary="fakechaind",
        skip_scripts=False,
        downloads={"5.1.0": Download(url=server.url("fakechaind"), sha256="0" * 64)},
    )
    with pytest.raises(ChecksumMismatch, match="does not match"):
        resolve_binary(client, "5.1.0", data, path_env="")
    assert list((data / "bin").iterdir()) == []


def test_download_extracts_the_declared_member_of_an_archive(
    served: tuple[Path, _Server], tmp_path: Path
) -> None:
    root, server = served
    exe = fake_binary(tmp_path / "build" / "fakechaind", "6.0.0").read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("fakechain-6.0.0-linux/fakechaind")
        info.size = len(exe)
        tar.addfile(info, io.BytesIO(exe))
    (root / "fakechain.tar.gz").write_bytes(buffer.getvalue())
    good = Download(
        url=server.url("fakechain.tar.gz"),
        sha256=sha256(buffer.getvalue()),
        member="fakechain-6.0.0-linux/fakechaind",
    )
    target = tmp_path / "data" / "bin" / "fakechaind-6.0.0"
    assert download_binary(good, target).read_bytes() == exe
    missing = Download(url=good.url, sha256=good.sha256, member="nope/fakechaind")
    with pytest.raises(DownloadError, match="cannot unpack"):
        download_binary(missing, tmp_path / "other" / "fakechaind-6.0.0")
    assert list((tmp_path / "other").iterdir()) == []


def test_download_errors(served: tuple[Path, _Server], tmp_path: Path) -> None:
    _, server = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_binary(Download(url=server.url("absent"), sha256="0" * 64), tmp_path / "x")
    with pytest.raises(DownloadError, match="not HTTP"):
        download_binary(Download(url="file:///etc/passwd", sha256="0" * 64), tmp_path / "y")
    with pytest.raises(BinaryNotFound, match="no download is declared"):
        resolve_binary(FAKE, "1.2.3", tmp_path / "data", path_env="")


@pytest.mark.parametrize(
    ("answer", "version"),
    [
        ("anvil/v1.5.1", "1.5.1"),
        ("Geth/v1.14.12-stable-293a300d/linux-amd64/go1.22.1", "1.14.12"),
        ("/LitecoinCore:0.21.2.1/", "0.21.2.1"),
        ("Nethermind/v1.28.0+3a2d9a7e/linux-x64/dotnet8.0.8", "1.28.0"),
        ("no version here", None),
        (42, None),
        (None, None),
    ],
)
def test_reported_version(answer: object, version: str | None) -> None:
    assert reported_version(answer) == version
