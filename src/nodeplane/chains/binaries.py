"""Client executables on the executor's host: find them, ask their version, or download them.

Search order for a client's binary: `<data_dir>/bin/<binary>`, then downloads kept as
`<data_dir>/bin/<binary>-<version>`, then the client's known extra directories (Debian's
`/usr/lib/litecoin`), then PATH. A binary is used only if its reported version is the one the
spec asks for. Downloads are verified against the adapter-declared SHA-256 before they are
made executable, and land atomically (a partial file never has the final name).

Everything here blocks (subprocess, disk, HTTP): async callers run it in a thread.
"""

import hashlib
import os
import re
import subprocess
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx

from nodeplane.chains.base import ClientDef, Download
from nodeplane.protocol.spec import VERSION_PATTERN as WIRE_VERSION_PATTERN

VERSION_PATTERN = re.compile(r"(?<![\w.])v?(\d+\.\d+(?:\.\d+)*)")
VERSION_TIMEOUT_S = 10.0
DOWNLOAD_TIMEOUT_S = 60.0
MAX_DOWNLOAD_BYTES = 2 * 1024**3

_version_cache: dict[tuple[str, int, int], str | None] = {}
_version_lock = threading.Lock()


class BinaryNotFound(LookupError):
    """No executable of the requested client version is present or downloadable."""


class DownloadError(RuntimeError):
    """A declared download could not be fetched or unpacked."""


class ChecksumMismatch(DownloadError):
    """The downloaded file's SHA-256 is not the declared one; nothing was installed."""


def normalize_version(version: str) -> str:
    """`v0.21.2.1` and `0.21.2.1` name the same version."""
    return version.strip().removeprefix("v")


def bin_dir(data_dir: Path) -> Path:
    """Where the executor keeps binaries placed or downloaded for it."""
    return data_dir / "bin"


def download_path(client: ClientDef, version: str, data_dir: Path) -> Path:
    """Where a downloaded `version` of `client` is kept."""
    return bin_dir(data_dir) / f"{client.binary}-{normalize_version(version)}"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _is_script(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(2) == b"#!"
    except OSError:
        return False


def candidates(client: ClientDef, data_dir: Path, path_env: str | None = None) -> list[Path]:
    """Every usable executable of `client` on this host, in search order, without duplicates."""
    search = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    own = bin_dir(data_dir)
    paths = [own / client.binary, *sorted(own.glob(f"{client.binary}-*"))]
    dirs = [*client.extra_dirs, *(d for d in search.split(os.pathsep) if d)]
    paths += [Path(d) / client.binary for d in dirs]
    found: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if not _is_executable(path) or (client.skip_scripts and _is_script(path)):
            continue
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            found.append(path)
    return found


def parse_version(output: str) -> str | None:
    """The first dotted version number in a `--version` output (`v0.21.2.1` -> `0.21.2.1`)."""
    match = VERSION_PATTERN.search(output)
    return match.group(1) if match else None


def reported_version(answer: object) -> str | None:
    """The dotted version in a running client's self-description over RPC (`anvil/v1.5.1`,
    `/LitecoinCore:0.21.2.1/` → `1.5.1`, `0.21.2.1`), if it fits the wire's version rule."""
    if not isinstance(answer, str):
        return None
    version = parse_version(answer[:200])
    return version if version and re.fullmatch(WIRE_VERSION_PATTERN, version) else None


def detect_version(path: Path, client: ClientDef) -> str | None:
    """Run `<path> <version_args>` and parse its version; cached per file and modification."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with _version_lock:
        if key in _version_cache:
            return _version_cache[key]
    try:
        done = subprocess.run(
            [str(path), *client.version_args],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        version = parse_version(done.stdout + "\n" + done.stderr)
    except (OSError, subprocess.TimeoutExpired):
        version = None
    with _version_lock:
        _version_cache[key] = version
    return version


def installed_versions(
    client: ClientDef, data_dir: Path, path_env: str | None = None
) -> tuple[str, ...]:
    """The versions of `client` present on this host, newest first by string order."""
    versions = {detect_version(p, client) for p in candidates(client, data_dir, path_env)}
    return tuple(sorted((v for v in versions if v), reverse=True))


def find_binary(
    client: ClientDef, version: str, data_dir: Path, path_env: str | None = None
) -> Path | None:
    """The first executable of `client` that reports `version`, if any."""
    wanted = normalize_version(version)
    for path in candidates(client, data_dir, path_env):
        if detect_version(path, client) == wanted:
            return path
    return None


def resolve_binary(
    client: ClientDef,
    version: str,
    data_dir: Path,
    *,
    path_env: str | None = None,
    http: httpx.Client | None = None,
) -> Path:
    """An executable of `client` at `version`: present on the host, else downloaded.

    Raises BinaryNotFound when neither works, ChecksumMismatch for a tampered download.
    """
    found = find_binary(client, version, data_dir, path_env)
    if found is not None:
        return found
    download = client.downloads.get(version) or client.downloads.get(normalize_version(version))
    if download is None:
        raise BinaryNotFound(
            f"{client.binary} {version} is not installed (searched {bin_dir(data_dir)}, "
            f"{', '.join(client.extra_dirs) or 'no extra directories'}, PATH) "
            "and no download is declared for it"
        )
    return download_binary(download, download_path(client, version, data_dir), http=http)


def _stream_to(download: Download, fh: IO[bytes], http: httpx.Client) -> str:
    digest = hashlib.sha256()
    size = 0
    with http.stream("GET", download.url, follow_redirects=True) as response:
        if response.status_code != 200:
            raise DownloadError(f"GET {download.url}: HTTP {response.status_code}")
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                raise DownloadError(f"{download.url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def _member_chunks(archive: Path, member: str) -> Iterator[bytes]:
    """The bytes of `member` inside a tar (any compression) or zip archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as zsrc:
            yield from iter(lambda: zsrc.read(1 << 20), b"")
        return
    with tarfile.open(archive, "r:*") as tf:
        tsrc = tf.extractfile(member)
        if tsrc is None:
            raise DownloadError(f"{member} is not a regular file in the archive")
        with tsrc:
            yield from iter(lambda: tsrc.read(1 << 20), b"")


def _write_atomically(target: Path, chunks: Iterator[bytes]) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o755)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def download_binary(download: Download, target: Path, *, http: httpx.Client | None = None) -> Path:
    """Fetch `download`, check its SHA-256, and install the executable at `target`.

    The bytes go to a temporary file beside `target` and are checked before anything is made
    executable or renamed into place; on any failure nothing is left behind.
    """
    if not download.url.startswith(("https://", "http://")):
        raise DownloadError(f"refusing to download from {download.url!r}: not HTTP(S)")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    client = http or httpx.Client(timeout=DOWNLOAD_TIMEOUT_S)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".download-") as fh:
        try:
            actual = _stream_to(download, fh, client)
        except httpx.HTTPError as exc:
            raise DownloadError(f"GET {download.url}: {type(exc).__name__}: {exc}") from exc
        finally:
            if http is None:
                client.close()
        fh.flush()
        if actual.lower() != download.sha256.strip().lower():
            raise ChecksumMismatch(
                f"{download.url}: SHA-256 {actual} does not match the declared {download.sha256}"
            )
        source = Path(fh.name)
        try:
            if download.member is None:
                with source.open("rb") as src:
                    _write_atomically(target, iter(lambda: src.read(1 << 20), b""))
            else:
                _write_atomically(target, _member_chunks(source, download.member))
        except (KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise DownloadError(f"{download.url}: cannot unpack {download.member}") from exc
    return target
