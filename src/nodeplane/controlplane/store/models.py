"""SQLAlchemy models of the control plane's data (DESIGN §2)."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from nodeplane.controlplane.store.types import JSONDocument, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSONDocument}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    is_system_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("organization_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Invite(Base):
    __tablename__ = "invites"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]


class Session(Base):
    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), index=True)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("organizations.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    last_used_at: Mapped[datetime | None]


class SignInThrottle(Base):
    """Failed sign-ins counted per key, in the database so every replica agrees.

    `scope` says what the key is: an account at one client address, a client address across
    accounts, or an account across addresses. Past its free failures a key earns growing delays
    (`blocked_until`); its count starts over once `last_failure_at` is a window old.
    """

    __tablename__ = "sign_in_throttle"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(index=True)
    blocked_until: Mapped[datetime | None]


class SignInAddress(Base):
    """A client address an account has signed in from; the per-account throttle spares it."""

    __tablename__ = "sign_in_addresses"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id"), primary_key=True)
    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_success_at: Mapped[datetime] = mapped_column(index=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    executor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("executors.id"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Executor(Base):
    __tablename__ = "executors"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64), default="")
    capabilities: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resources: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_sync_at: Mapped[datetime | None]
    # Whether the last recorded connectivity event was "connected"; drives disconnect events.
    connected: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The agent process that acts for this executor and when it last synced; another process
    # is refused while this one is live (services/executors.py, "one instance").
    instance_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    instance_seen_at: Mapped[datetime | None]


class ExecutorInstanceRefusal(Base):
    """An agent process refused because another instance of its executor was live.

    One row per refused instance, so `executor.instance_refused` is recorded once per instance
    however often it retries; rows of instances that stopped retrying are swept after a day.
    """

    __tablename__ = "executor_instance_refusals"

    executor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("executors.id"), primary_key=True)
    instance_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    first_refused_at: Mapped[datetime]
    last_refused_at: Mapped[datetime] = mapped_column(index=True)


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("executor_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    executor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("executors.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    chain: Mapped[str] = mapped_column(String(32))
    network: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(Integer)
    observed: Mapped[dict[str, Any] | None]
    observed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    retain_data: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Per process, the height last seen to change and when (protocol/alerts.py, "marks"), moved
    # only when an observation changes; `heights_since` is the oldest mark's time, indexed so
    # the alert timer finds the nodes that may have stalled without reading the others.
    height_marks: Mapped[dict[str, Any] | None]
    heights_since: Mapped[datetime | None] = mapped_column(index=True)

    @property
    def desired_state(self) -> str | None:
        """The spec's desired state as stored (None: not set, or not a string)."""
        value = self.spec.get("desiredState")
        return value if isinstance(value, str) else None


class SpecRevision(Base):
    """Immutable history of a node's spec; outlives the node row, so no foreign key to it."""

    __tablename__ = "spec_revisions"
    __table_args__ = (UniqueConstraint("node_id", "revision"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    node_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    organization_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    node_name: Mapped[str] = mapped_column(String(63))
    revision: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]]
    author_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    author: Mapped[str] = mapped_column(String(320))
    cause: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Event(Base):
    """Append-only events feed; keyed by a growing integer for keyset pagination."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_id", "organization_id", "id"),
        Index("ix_events_node_id", "node_id", "id"),
        # What the retention pruner scans (services/event_retention.py): events no person
        # caused, oldest first, overall (by age) and per organization (by count).
        Index(
            "ix_events_prunable_age",
            "created_at",
            "id",
            postgresql_where=text("actor_type <> 'user'"),
            sqlite_where=text("actor_type <> 'user'"),
        ),
        Index(
            "ix_events_prunable_org",
            "organization_id",
            "created_at",
            "id",
            postgresql_where=text("actor_type <> 'user'"),
            sqlite_where=text("actor_type <> 'user'"),
        ),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    type: Mapped[str] = mapped_column(String(128))
    level: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    actor: Mapped[str] = mapped_column(String(320))
    node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    node_name: Mapped[str | None] = mapped_column(String(63))
    executor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertSetting(Base):
    """One rule's settings for an organization (`node_id` None) or a node (an override).

    `scope` is "org" or the node's id, so one row per (organization, scope, rule) is a plain
    unique constraint on both databases. A None `enabled` or `threshold` inherits.
    """

    __tablename__ = "alert_settings"
    __table_args__ = (UniqueConstraint("organization_id", "scope", "rule"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    scope: Mapped[str] = mapped_column(String(40))
    node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    rule: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool | None] = mapped_column(Boolean)
    threshold: Mapped[float | None] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(320))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Incident(Base):
    """An alert rule's condition holding for one subject, from when it opened to when it cleared.

    While open, `open_key` is "<rule>:<subject id>"; it is set to None on resolution. Its unique
    constraint (NULLs never collide) is what keeps one open incident per (organization, rule,
    subject) when several processes or replicas evaluate at once.
    """

    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("organization_id", "open_key"),
        Index("ix_incidents_org_opened", "organization_id", "opened_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    rule: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    subject_kind: Mapped[str] = mapped_column(String(16))
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    subject_name: Mapped[str] = mapped_column(String(63))
    # No foreign keys: an incident outlives the node or executor it was about.
    node_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    executor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    message: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    open_key: Mapped[str | None] = mapped_column(String(100))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolution: Mapped[str | None] = mapped_column(Text)


class WebhookEndpoint(Base):
    """Where an organization's notifications are POSTed (controlplane/webhooks/).

    `secret` is the HMAC-SHA256 key each delivery is signed with. It is kept as the server needs
    it to sign, not hashed (a digest cannot sign); docs/security.md says what that means.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(200), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The event types sent to this endpoint (webhook.test is sent on request whatever they are).
    event_types: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    secret: Mapped[str] = mapped_column(String(128))
    secret_prefix: Mapped[str] = mapped_column(String(16))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One event to send to one endpoint: the outbox row the dispatcher claims and retries.

    `id` is the delivery id receivers deduplicate on; `body` is the exact JSON sent, written
    once at enqueue time so every attempt and every redelivery carries the same bytes. A
    pending row is due at `next_attempt_at`; a claimed one carries the claim's id and has its
    `next_attempt_at` pushed past the attempt's deadline (a lease), so a process that dies
    mid-attempt only delays the delivery until another process takes it again.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_org_created", "organization_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organizations.id"))
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    # pending | succeeded | failed
    status: Mapped[str] = mapped_column(String(16))
    # Redeliver starts a new series; attempts count within the current one.
    series: Mapped[int] = mapped_column(Integer, default=1)
    series_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    claim_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One try at sending a delivery: what the receiver answered, or why nothing was."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    series: Mapped[int] = mapped_column(Integer)
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # At most RESPONSE_EXCERPT_CHARS of the answer's body, as text.
    response_excerpt: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(String(500))
    succeeded: Mapped[bool] = mapped_column(Boolean)
