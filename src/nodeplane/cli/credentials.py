"""Where the CLI keeps the control plane's URL and the session token between commands."""

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    """A control-plane URL and the bearer token to use there (either may be missing)."""

    url: str | None = None
    token: str | None = None
    email: str | None = None
    organization: str | None = None


def credentials_path() -> Path:
    """`$XDG_CONFIG_HOME/nodeplane/credentials.json` (default `~/.config`)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nodeplane" / "credentials.json"


def load_credentials(path: Path | None = None) -> Credentials:
    """What `nodeplane login` stored, or nothing when there is no readable file."""
    path = path or credentials_path()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return Credentials()
    if not isinstance(raw, dict):
        return Credentials()
    fields = {k: raw.get(k) for k in ("url", "token", "email", "organization")}
    return Credentials(**{k: v for k, v in fields.items() if isinstance(v, str)})


def save_credentials(creds: Credentials, path: Path | None = None) -> Path:
    """Write `creds` readable by the owner only (0600), replacing the file atomically."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created with 0600 from the start: the token must never be readable by others, even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(creds), f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def resolve(url: str | None, token: str | None, stored: Credentials) -> Credentials:
    """Flags and environment (`url`, `token`) win over what `login` stored.

    The stored token is only sent to the stored URL: pointing `--url` at another server must not
    hand that server our session.
    """
    chosen_url = url or stored.url
    if token:
        return Credentials(url=chosen_url, token=token)
    same_server = True
    if url is not None and stored.url is not None:
        # Imported here, where two URLs are compared: the client module loads the HTTP stack.
        from nodeplane.cli.client import normalize_url

        same_server = _comparable(normalize_url(url)) == _comparable(stored.url)
    return Credentials(
        url=chosen_url,
        token=stored.token if same_server else None,
        email=stored.email if same_server else None,
        organization=stored.organization if same_server else None,
    )


def _comparable(url: str) -> str:
    return url.rstrip("/").lower()
