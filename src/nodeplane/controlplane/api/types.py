"""GraphQL output types, built from store rows by the `from_row` constructors."""

from datetime import datetime
from enum import Enum
from uuid import UUID

import strawberry
from strawberry.scalars import JSON

from nodeplane.controlplane.api.context import Info
from nodeplane.controlplane.auth.principal import ApiKeyKind as ApiKeyKindValue
from nodeplane.controlplane.auth.principal import Role as RoleValue
from nodeplane.controlplane.services import alerts as alert_service
from nodeplane.controlplane.services import executors as executor_service
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.store import models
from nodeplane.protocol import AssignedNodeSpec as AssignedNodeSpecModel
from nodeplane.protocol import DesiredState as DesiredStateValue
from nodeplane.protocol import EventLevel as EventLevelValue
from nodeplane.protocol import LifecycleAction as LifecycleActionValue
from nodeplane.protocol import NodePhase as NodePhaseValue
from nodeplane.protocol.alerts import AlertRule as AlertRuleValue
from nodeplane.protocol.logs import LogSessionRequest
from nodeplane.protocol.spec_diff import SpecChange as SpecChangeModel

NodePhase = strawberry.enum(NodePhaseValue, name="NodePhase")
DesiredState = strawberry.enum(DesiredStateValue, name="DesiredState")
EventLevel = strawberry.enum(EventLevelValue, name="EventLevel")
LifecycleAction = strawberry.enum(LifecycleActionValue, name="LifecycleAction")
Role = strawberry.enum(RoleValue, name="Role")
ApiKeyKind = strawberry.enum(ApiKeyKindValue, name="ApiKeyKind")


@strawberry.enum
class ExecutorStatus(Enum):
    ONLINE = "online"
    OFFLINE = "offline"


@strawberry.type
class PageInfo:
    end_cursor: str | None
    has_next_page: bool


@strawberry.type
class Organization:
    id: UUID
    name: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.Organization) -> "Organization":
        return cls(id=row.id, name=row.name, created_at=row.created_at)


@strawberry.type
class Me:
    id: UUID | None
    email: str | None
    role: Role | None  # type: ignore[valid-type]
    is_system_admin: bool
    organization: Organization | None
    executor_id: UUID | None
    kind: str


@strawberry.type
class Member:
    id: UUID
    email: str
    role: Role  # type: ignore[valid-type]
    created_at: datetime

    @classmethod
    def from_rows(cls, member: models.Member, user: models.User) -> "Member":
        return cls(
            id=member.id,
            email=user.email,
            role=RoleValue(member.role),
            created_at=member.created_at,
        )


@strawberry.type
class Executor:
    id: UUID
    name: str
    kind: str
    version: str
    last_sync_at: datetime | None = strawberry.field(
        description="When the executor last synced; written up to a second after the sync."
    )
    capabilities: JSON
    resources: JSON
    created_at: datetime
    online: bool

    @strawberry.field
    def status(self) -> ExecutorStatus:
        return ExecutorStatus.ONLINE if self.online else ExecutorStatus.OFFLINE

    @strawberry.field
    async def node_count(self, info: Info) -> int:
        return await info.context.loaders.node_count.load(self.id)

    @classmethod
    def from_row(cls, row: models.Executor, heartbeat_timeout: float) -> "Executor":
        return cls(
            id=row.id,
            name=row.name,
            kind=row.kind,
            version=row.version,
            last_sync_at=row.last_sync_at,
            capabilities=JSON(row.capabilities),
            resources=JSON(row.resources),
            created_at=row.created_at,
            online=executor_service.is_online(row, heartbeat_timeout),
        )


@strawberry.type
class Node:
    id: UUID
    name: str
    chain: str
    network: str
    phase: NodePhase  # type: ignore[valid-type]
    desired_state: DesiredState  # type: ignore[valid-type]
    revision: int
    observed_revision: int | None
    pending_change: bool
    stale: bool
    spec: JSON
    observed: JSON | None
    observed_at: datetime | None = strawberry.field(
        description="When the executor last reported this node, changed or not; a report "
        "that repeats the stored observation is written up to a second after it."
    )
    deleted_at: datetime | None
    retain_data: bool
    created_at: datetime
    updated_at: datetime
    executor_id: UUID
    # Read with the nodes (api/views.py): a plain field, not a loader awaited per node, which
    # was most of graphql-core's work for a list of 200 nodes.
    executor_view: strawberry.Private[Executor | None] = None

    @strawberry.field
    def executor(self) -> Executor | None:
        return self.executor_view

    @classmethod
    def from_row(
        cls, row: models.Node, executor_online: bool, executor: Executor | None = None
    ) -> "Node":
        observed = node_service.observed_of(row)
        observed_revision = observed.revision if observed else None
        return cls(
            id=row.id,
            name=row.name,
            chain=row.chain,
            network=row.network,
            phase=node_service.phase_of(row),
            desired_state=DesiredStateValue(row.spec.get("desiredState", "running")),
            revision=row.revision,
            observed_revision=observed_revision,
            pending_change=observed_revision is None or observed_revision < row.revision,
            stale=not executor_online,
            spec=JSON(row.spec),
            observed=JSON(row.observed) if row.observed is not None else None,
            observed_at=row.observed_at,
            deleted_at=row.deleted_at,
            retain_data=row.retain_data,
            created_at=row.created_at,
            updated_at=row.updated_at,
            executor_id=row.executor_id,
            executor_view=executor,
        )


@strawberry.type
class NodeConnection:
    items: list[Node]
    page_info: PageInfo


@strawberry.type
class Event:
    id: strawberry.ID
    type: str
    level: EventLevel  # type: ignore[valid-type]
    source: str
    message: str
    actor_type: str
    actor: str
    node_id: UUID | None
    node_name: str | None
    executor_id: UUID | None
    payload: JSON
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.Event) -> "Event":
        return cls(
            id=strawberry.ID(str(row.id)),
            type=row.type,
            level=EventLevelValue(row.level),
            source=row.source,
            message=row.message,
            actor_type=row.actor_type,
            actor=row.actor,
            node_id=row.node_id,
            node_name=row.node_name,
            executor_id=row.executor_id,
            payload=JSON(row.payload),
            created_at=row.created_at,
        )


@strawberry.type
class EventConnection:
    items: list[Event]
    page_info: PageInfo


@strawberry.type
class SpecRevision:
    node_id: UUID
    node_name: str
    revision: int
    spec: JSON
    author: str
    cause: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: models.SpecRevision) -> "SpecRevision":
        return cls(
            node_id=row.node_id,
            node_name=row.node_name,
            revision=row.revision,
            spec=JSON(row.spec),
            author=row.author,
            cause=row.cause,
            created_at=row.created_at,
        )


@strawberry.type
class SpecChange:
    path: str
    before: JSON | None
    after: JSON | None

    @classmethod
    def from_model(cls, change: SpecChangeModel) -> "SpecChange":
        return cls(path=change.path, before=change.before, after=change.after)


@strawberry.type
class ApiKey:
    id: UUID
    name: str
    kind: ApiKeyKind  # type: ignore[valid-type]
    prefix: str
    enabled: bool
    executor_id: UUID | None
    expires_at: datetime | None
    last_used_at: datetime | None = strawberry.field(
        description="When the key last authenticated a call (to 30 s; written within a second)."
    )
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: models.ApiKey) -> "ApiKey":
        return cls(
            id=row.id,
            name=row.name,
            kind=ApiKeyKindValue(row.kind),
            prefix=row.prefix,
            enabled=row.enabled,
            executor_id=row.executor_id,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class AssignedNodeSpec:
    node_id: UUID
    name: str
    revision: int
    spec: JSON | None
    deleted: bool
    retain_data: bool

    @classmethod
    def from_model(cls, m: AssignedNodeSpecModel) -> "AssignedNodeSpec":
        return cls(
            node_id=m.node_id,
            name=m.name,
            revision=m.revision,
            spec=JSON(m.spec.to_wire()) if m.spec else None,
            deleted=m.deleted,
            retain_data=m.retain_data,
        )


@strawberry.type(description="A live-log session an executor is asked to serve (issue 10).")
class ExecutorLogSession:
    session_id: UUID
    node_id: UUID
    role: str
    tail: int
    level: str
    follow: bool

    @classmethod
    def from_model(cls, m: LogSessionRequest) -> "ExecutorLogSession":
        return cls(
            session_id=m.session_id,
            node_id=m.node_id,
            role=m.role,
            tail=m.tail,
            level=m.level.value,
            follow=m.follow,
        )


@strawberry.type
class LoginPayload:
    token: str
    me: Me


@strawberry.type
class InvitePayload:
    token: str
    email: str
    role: Role  # type: ignore[valid-type]
    expires_at: datetime


@strawberry.type
class CreateOrganizationPayload:
    organization: Organization
    invite_token: str = strawberry.field(
        description="The owner's invite; the owner is never added directly, even with an account."
    )


@strawberry.type
class MemberAccessPayload:
    member: Member
    sessions_ended: int
    api_keys_revoked: int


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKey
    secret: str


@strawberry.type
class RejectedObservation:
    node_id: UUID
    reason: str


@strawberry.type
class SyncExecutorPayload:
    executor: Executor
    rejected: list[RejectedObservation]


@strawberry.type
class RebindExecutorPayload:
    executor: Executor
    api_key: ApiKey
    revoked_keys: list[ApiKey]


AlertRule = strawberry.enum(AlertRuleValue, name="AlertRule")


@strawberry.enum
class IncidentState(Enum):
    OPEN = "open"
    RESOLVED = "resolved"


@strawberry.type
class Incident:
    id: UUID
    rule: AlertRule  # type: ignore[valid-type]
    severity: str
    state: IncidentState
    subject_kind: str
    subject_id: UUID
    subject_name: str
    node_id: UUID | None
    executor_id: UUID | None
    message: str
    value: float | None
    threshold: float | None
    details: JSON
    opened_at: datetime
    resolved_at: datetime | None
    resolution: str | None

    @classmethod
    def from_row(cls, row: models.Incident) -> "Incident":
        return cls(
            id=row.id,
            rule=AlertRuleValue(row.rule),
            severity=row.severity,
            state=IncidentState.OPEN if row.resolved_at is None else IncidentState.RESOLVED,
            subject_kind=row.subject_kind,
            subject_id=row.subject_id,
            subject_name=row.subject_name,
            node_id=row.node_id,
            executor_id=row.executor_id,
            message=row.message,
            value=row.value,
            threshold=row.threshold,
            details=JSON(row.details),
            opened_at=row.opened_at,
            resolved_at=row.resolved_at,
            resolution=row.resolution,
        )


@strawberry.type
class IncidentConnection:
    items: list[Incident]
    page_info: PageInfo


@strawberry.type(description="One rule's effective settings, and the layers they come from.")
class AlertRuleSetting:
    rule: AlertRule  # type: ignore[valid-type]
    enabled: bool
    threshold: float | None
    default_threshold: float | None
    threshold_meaning: str | None
    org_enabled: bool | None
    org_threshold: float | None
    node_enabled: bool | None
    node_threshold: float | None
    node_id: UUID | None

    @classmethod
    def from_model(cls, s: alert_service.RuleSetting) -> "AlertRuleSetting":
        return cls(
            rule=s.rule,
            enabled=s.enabled,
            threshold=s.threshold,
            default_threshold=s.default_threshold,
            threshold_meaning=s.threshold_meaning,
            org_enabled=s.org_enabled,
            org_threshold=s.org_threshold,
            node_enabled=s.node_enabled,
            node_threshold=s.node_threshold,
            node_id=s.node_id,
        )
