"""GraphQL queries: every read is scoped to the caller's organization."""

from uuid import UUID

import strawberry
from strawberry.scalars import JSON

from nodeplane.controlplane.api.context import Info
from nodeplane.controlplane.api.mutations import UpdateNodeInput
from nodeplane.controlplane.api.types import (
    AlertRule,
    AlertRuleSetting,
    ApiKey,
    AssignedNodeSpec,
    Event,
    EventConnection,
    EventLevel,
    Executor,
    ExecutorLogSession,
    Incident,
    IncidentConnection,
    IncidentState,
    Me,
    Member,
    Node,
    NodeConnection,
    NodePhase,
    Organization,
    PageInfo,
    SpecChange,
    SpecRevision,
)
from nodeplane.controlplane.api.validation import json_list, parse_wire
from nodeplane.controlplane.api.views import me_view, node_views
from nodeplane.controlplane.api.webhooks import WebhookQuery
from nodeplane.controlplane.auth.principal import require_principal
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services import (
    accounts,
    alerts,
    api_keys,
    events,
    executors,
    logs,
    nodes,
)
from nodeplane.protocol import KnownRevision
from nodeplane.protocol import NodePhase as NodePhaseValue
from nodeplane.protocol.logs import MAX_LOG_SESSIONS_PER_POLL


@strawberry.input
class NodeFilter:
    name: str | None = None
    chain: str | None = None
    phase: NodePhase | None = None  # type: ignore[valid-type]
    executor_id: UUID | None = None


@strawberry.input
class EventFilter:
    node_id: UUID | None = None
    executor_id: UUID | None = None
    type: str | None = None
    level: EventLevel | None = None  # type: ignore[valid-type]


@strawberry.input
class IncidentFilter:
    state: IncidentState | None = None
    node_id: UUID | None = None
    rule: AlertRule | None = None  # type: ignore[valid-type]


@strawberry.type
class Query(WebhookQuery):
    @strawberry.field(description="The caller: user or executor key, with organization and role.")
    async def me(self, info: Info) -> Me | None:
        async with info.context.db.read() as session:
            return await me_view(session, info.context)

    @strawberry.field
    async def organization(self, info: Info) -> Organization | None:
        async with info.context.db.read() as session:
            org = await accounts.get_organization(session, info.context.principal)
        return Organization.from_row(org) if org else None

    @strawberry.field
    async def members(self, info: Info) -> list[Member]:
        async with info.context.db.read() as session:
            rows = await accounts.list_members(session, info.context.principal)
        return [
            Member(id=m.id, email=u.email, role=m.role, created_at=m.created_at) for m, u in rows
        ]

    @strawberry.field(description="Nodes by name; `after` is the previous page's endCursor.")
    async def nodes(
        self,
        info: Info,
        filter: NodeFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> NodeConnection:
        f = filter or NodeFilter()
        flt = nodes.NodeFilter(
            name=f.name,
            chain=f.chain,
            phase=NodePhaseValue(f.phase) if f.phase is not None else None,
            executor_id=f.executor_id,
        )
        async with info.context.db.read() as session:
            page = await nodes.list_nodes(
                session, info.context.principal, flt, first=first, after=after
            )
            items = await node_views(session, info.context, page.items)
        return NodeConnection(
            items=items,
            page_info=PageInfo(end_cursor=page.end_cursor, has_next_page=page.has_next_page),
        )

    @strawberry.field
    async def node(self, info: Info, id: UUID) -> Node | None:
        async with info.context.db.read() as session:
            row = await nodes.get_node(session, info.context.principal, id)
            return (await node_views(session, info.context, [row]))[0] if row else None

    @strawberry.field
    async def node_revisions(self, info: Info, node_id: UUID) -> list[SpecRevision]:
        async with info.context.db.read() as session:
            rows = await nodes.list_revisions(session, info.context.principal, node_id)
        return [SpecRevision.from_row(r) for r in rows]

    @strawberry.field(description="What changed between two revisions of a node.")
    async def node_revision_diff(
        self, info: Info, node_id: UUID, from_revision: int, to_revision: int
    ) -> list[SpecChange] | None:
        async with info.context.db.read() as session:
            changes = await nodes.diff_revisions(
                session, info.context.principal, node_id, from_revision, to_revision
            )
        return [SpecChange.from_model(c) for c in changes] if changes is not None else None

    @strawberry.field(
        description="What updateNode would change (refused as it would be); writes nothing."
    )
    async def node_update_preview(self, info: Info, input: UpdateNodeInput) -> list[SpecChange]:
        async with info.context.db.read() as session:
            changes = await nodes.preview_update(
                session,
                info.context.principal,
                input.node_id,
                nodes.SpecEdit(
                    clients=input.clients,
                    overrides=input.overrides,
                    resources=input.resources,
                    storage=input.storage,
                    rollout=input.rollout,
                    spec=input.spec,
                ),
                expected_revision=input.expected_revision,
            )
        return [SpecChange.from_model(c) for c in changes]

    @strawberry.field
    async def executors(self, info: Info) -> list[Executor]:
        async with info.context.db.read() as session:
            rows = await executors.list_executors(session, info.context.principal)
        return [Executor.from_row(r, info.context.settings.heartbeat_timeout) for r in rows]

    @strawberry.field
    async def executor(self, info: Info, id: UUID) -> Executor | None:
        async with info.context.db.read() as session:
            row = await executors.get_executor(session, info.context.principal, id)
        return Executor.from_row(row, info.context.settings.heartbeat_timeout) if row else None

    @strawberry.field(description="The events feed, newest first, keyset-paginated.")
    async def events(
        self,
        info: Info,
        filter: EventFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> EventConnection:
        f = filter or EventFilter()
        flt = events.EventFilter(
            node_id=f.node_id, executor_id=f.executor_id, type=f.type, level=f.level
        )
        async with info.context.db.read() as session:
            page = await events.list_events(
                session, info.context.principal, flt, first=first, after=after
            )
        return EventConnection(
            items=[Event.from_row(e) for e in page.items],
            page_info=PageInfo(end_cursor=page.end_cursor, has_next_page=page.has_next_page),
        )

    @strawberry.field(description="Alert incidents, newest opened first; `after` is endCursor.")
    async def incidents(
        self,
        info: Info,
        filter: IncidentFilter | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> IncidentConnection:
        f = filter or IncidentFilter()
        flt = alerts.IncidentFilter(
            state=f.state.value if f.state is not None else None,
            node_id=f.node_id,
            rule=f.rule,
        )
        async with info.context.db.read() as session:
            page = await alerts.list_incidents(
                session, info.context.principal, flt, first=first, after=after
            )
        return IncidentConnection(
            items=[Incident.from_row(r) for r in page.items],
            page_info=PageInfo(end_cursor=page.end_cursor, has_next_page=page.has_next_page),
        )

    @strawberry.field
    async def incident(self, info: Info, id: UUID) -> Incident | None:
        async with info.context.db.read() as session:
            row = await alerts.get_incident(session, info.context.principal, id)
        return Incident.from_row(row) if row else None

    @strawberry.field(description="How many incidents are open (the bell's count).")
    async def open_incident_count(self, info: Info) -> int:
        async with info.context.db.read() as session:
            return await alerts.count_open(session, info.context.principal)

    @strawberry.field(
        description="Alert rule settings: the organization's, or with nodeId one node's "
        "(null for a node the caller cannot see)."
    )
    async def alert_settings(
        self, info: Info, node_id: UUID | None = None
    ) -> list[AlertRuleSetting] | None:
        async with info.context.db.read() as session:
            rows = await alerts.alert_settings(session, info.context.principal, node_id)
        return [AlertRuleSetting.from_model(r) for r in rows] if rows is not None else None

    @strawberry.field
    async def api_keys(self, info: Info) -> list[ApiKey]:
        async with info.context.db.read() as session:
            rows = await api_keys.list_api_keys(session, info.context.principal)
        return [ApiKey.from_row(r) for r in rows]

    @strawberry.field(
        description="Executor spec long-poll: specs newer than `known`, held up to waitSeconds."
    )
    async def executor_specs(
        self, info: Info, known: JSON | None = None, wait_seconds: float = 0.0
    ) -> list[AssignedNodeSpec]:
        ctx = info.context
        # An executor's own poll document is answered without this resolver, by the same steps
        # (api/executor_calls.py): a change here is a change there.
        require_principal(ctx.principal)
        held = [
            parse_wire(KnownRevision, item, field="known") for item in json_list(known, "known")
        ]
        async with executors.recording_refusals(ctx.db):
            pending = await executors.poll_specs(
                ctx.db,
                ctx.principal,
                held,
                wait_seconds,
                max_wait=ctx.settings.max_poll_wait,
                instance=ctx.instance_id,
                heartbeat=ctx.heartbeat,
            )
        return [AssignedNodeSpec.from_model(m) for m in pending]

    @strawberry.field(
        description="Executor log-session long-poll: the executor's open live-log sessions, at "
        "once when they differ from `known`, else held up to waitSeconds until they change."
    )
    async def executor_log_sessions(
        self, info: Info, known: list[UUID] | None = None, wait_seconds: float = 0.0
    ) -> list[ExecutorLogSession]:
        ctx = info.context
        held = known or []
        if len(held) > MAX_LOG_SESSIONS_PER_POLL:
            raise DomainError(
                ErrorCode.INVALID_INPUT,
                f"known: at most {MAX_LOG_SESSIONS_PER_POLL} sessions",
                field="known",
            )
        async with executors.recording_refusals(ctx.db):
            sessions = await logs.poll_sessions(
                ctx.db,
                ctx.principal,
                held,
                wait_seconds,
                max_wait=ctx.settings.max_poll_wait,
                instance=ctx.instance_id,
                heartbeat=ctx.heartbeat,
            )
        return [ExecutorLogSession.from_model(s) for s in sessions]
