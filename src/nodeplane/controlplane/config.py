"""Control-plane settings, read from the environment (NODEPLANE_*) and overridable by CLI flags."""

import os
from dataclasses import dataclass, field
from pathlib import Path


def default_data_dir() -> Path:
    """Where nodeplane keeps its SQLite database by default (XDG data home)."""
    if explicit := os.environ.get("NODEPLANE_DATA_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "nodeplane"


def default_database_url() -> str:
    """NODEPLANE_DATABASE_URL, else an SQLite file in the data directory."""
    if url := os.environ.get("NODEPLANE_DATABASE_URL"):
        return url
    return f"sqlite:///{default_data_dir() / 'nodeplane.db'}"


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class Settings:
    """Everything the control plane needs to start."""

    database_url: str = field(default_factory=default_database_url)
    production: bool = field(
        default_factory=lambda: os.environ.get("NODEPLANE_ENV", "").lower() == "production"
    )
    admin_email: str | None = field(default_factory=lambda: os.environ.get("NODEPLANE_ADMIN_EMAIL"))
    admin_password: str | None = field(
        default_factory=lambda: os.environ.get("NODEPLANE_ADMIN_PASSWORD")
    )
    heartbeat_timeout: float = field(
        default_factory=lambda: _float_env("NODEPLANE_HEARTBEAT_TIMEOUT", 30.0)
    )
    sweep_interval: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SWEEP_INTERVAL", 5.0)
    )
    session_ttl_hours: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SESSION_TTL_HOURS", 24.0 * 7)
    )
    max_body_bytes: int = 1024 * 1024
    # Wall time one GraphQL request may take (a spec long-poll adds its wait to it).
    request_time_budget: float = field(
        default_factory=lambda: _float_env("NODEPLANE_REQUEST_TIME_BUDGET", 10.0)
    )
    # A larger answer is refused with `bad_request` rather than built and sent.
    max_response_bytes: int = field(
        default_factory=lambda: int(_float_env("NODEPLANE_MAX_RESPONSE_BYTES", 8 * 1024 * 1024))
    )
    login_max_failures: int = 5
    login_window_seconds: float = 15 * 60.0
