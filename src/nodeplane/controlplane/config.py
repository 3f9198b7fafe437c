"""Control-plane settings, read from the environment (NODEPLANE_*) and overridable by CLI flags."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from nodeplane.protocol import MAX_POLL_WAIT_SECONDS


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


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _default_password_workers() -> int:
    # argon2 runs several lanes per hash already; half the CPUs leaves the event loop room.
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class AccountLimits:
    """Password work and sign-in throttling (docs/security.md explains each number)."""

    # Bounded pool for argon2 hashing and verification, off the event loop.
    password_workers: int = field(
        default_factory=lambda: _int_env("NODEPLANE_PASSWORD_WORKERS", _default_password_workers())
    )
    password_max_waiting: int = field(
        default_factory=lambda: _int_env("NODEPLANE_PASSWORD_MAX_WAITING", 8)
    )
    password_max_per_address: int = field(
        default_factory=lambda: _int_env("NODEPLANE_PASSWORD_MAX_PER_ADDRESS", 2)
    )
    # Failures allowed before delays start, per (account, address), per address, per account
    # (the last only for addresses that never signed in to the account).
    signin_free_failures: int = field(
        default_factory=lambda: _int_env("NODEPLANE_SIGNIN_FREE_FAILURES", 5)
    )
    signin_address_free_failures: int = field(
        default_factory=lambda: _int_env("NODEPLANE_SIGNIN_ADDRESS_FREE_FAILURES", 20)
    )
    signin_account_free_failures: int = field(
        default_factory=lambda: _int_env("NODEPLANE_SIGNIN_ACCOUNT_FREE_FAILURES", 50)
    )
    signin_first_delay_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SIGNIN_FIRST_DELAY_SECONDS", 1.0)
    )
    signin_max_delay_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SIGNIN_MAX_DELAY_SECONDS", 15 * 60.0)
    )
    signin_window_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SIGNIN_WINDOW_SECONDS", 60 * 60.0)
    )
    signin_known_address_days: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SIGNIN_KNOWN_ADDRESS_DAYS", 90.0)
    )
    # Clean-up of expired sessions, old invites and throttle rows.
    sweep_interval: float = field(
        default_factory=lambda: _float_env("NODEPLANE_ACCOUNT_SWEEP_INTERVAL", 60.0)
    )
    invite_retention_days: float = field(
        default_factory=lambda: _float_env("NODEPLANE_INVITE_RETENTION_DAYS", 30.0)
    )


@dataclass(frozen=True)
class WebhookSettings:
    """How webhooks are sent (docs/webhooks.md): the retry schedule, timeouts and concurrency."""

    # First retry delay; each further failure doubles it (jittered), up to max_delay.
    backoff_base_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_BACKOFF_BASE", 10.0)
    )
    max_delay_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_MAX_DELAY", 15 * 60.0)
    )
    # How long after a series starts it is retried before the delivery is marked failed.
    retry_window_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_RETRY_WINDOW", 60 * 60.0)
    )
    # The whole of one attempt: connecting, sending and reading the answer.
    attempt_timeout_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_TIMEOUT", 10.0)
    )
    # Attempts in flight at once in this process, and to any one endpoint.
    concurrency: int = field(default_factory=lambda: _int_env("NODEPLANE_WEBHOOK_CONCURRENCY", 16))
    per_endpoint_concurrency: int = field(
        default_factory=lambda: _int_env("NODEPLANE_WEBHOOK_PER_ENDPOINT_CONCURRENCY", 2)
    )
    # How often the outbox is looked at for due deliveries.
    poll_interval_seconds: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_POLL_INTERVAL", 1.0)
    )
    # Succeeded and failed deliveries (and their attempts) are deleted this long after.
    retention_days: float = field(
        default_factory=lambda: _float_env("NODEPLANE_WEBHOOK_RETENTION_DAYS", 30.0)
    )


@dataclass(frozen=True)
class EventRetention:
    """How much of the fleet's own chatter the events feed keeps (README, "Running nodeplane").
    Zero turns a limit off. Events a person caused (the audit trail) are never pruned."""

    max_age_days: float = field(
        default_factory=lambda: _float_env("NODEPLANE_EVENT_RETENTION_DAYS", 30.0)
    )
    max_per_organization: int = field(
        default_factory=lambda: _int_env("NODEPLANE_EVENT_RETENTION_COUNT", 100_000)
    )
    # How often the pruner runs, and how many rows one of its transactions deletes (short
    # transactions: on SQLite every other writer waits while one runs).
    interval: float = field(
        default_factory=lambda: _float_env("NODEPLANE_EVENT_PRUNE_INTERVAL", 300.0)
    )
    batch: int = field(default_factory=lambda: _int_env("NODEPLANE_EVENT_PRUNE_BATCH", 2_000))


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
    # How often the alert timer judges what time alone makes true (sync_stalled); observations
    # are judged when they arrive, executors when the offline sweep finds them silent.
    alert_interval: float = field(
        default_factory=lambda: _float_env("NODEPLANE_ALERT_INTERVAL", 10.0)
    )
    # How often heartbeat, report and key-use times are written (store/seen_times.py): the most
    # lastSyncAt, observedAt and lastUsedAt lag, and the most of them a crash loses.
    seen_flush_interval: float = field(
        default_factory=lambda: _float_env("NODEPLANE_SEEN_FLUSH_INTERVAL", 1.0)
    )
    # Longest an executor's spec long-poll is held (the protocol's cap; tests lower it so a poll
    # that asks for more is seen capped in seconds, not half a minute).
    max_poll_wait: float = field(
        default_factory=lambda: _float_env("NODEPLANE_MAX_POLL_WAIT", MAX_POLL_WAIT_SECONDS)
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
    accounts: AccountLimits = field(default_factory=AccountLimits)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    event_retention: EventRetention = field(default_factory=EventRetention)
    # Bearer token that opens /metrics on the main port (operator-level: every organization's
    # fleet); unset, /metrics there is 404. Kept out of repr so it never reaches a log.
    metrics_token: str | None = field(
        default_factory=lambda: os.environ.get("NODEPLANE_METRICS_TOKEN") or None, repr=False
    )
    # `host:port` of a second socket that serves only /metrics, without a token.
    metrics_listen: str | None = field(
        default_factory=lambda: os.environ.get("NODEPLANE_METRICS_LISTEN") or None
    )
