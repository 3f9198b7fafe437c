"""GraphQL mutations: thin wrappers over the domain services, which own the transactions."""

import math
from datetime import datetime
from typing import Annotated
from uuid import UUID

import strawberry
from strawberry.scalars import JSON

from nodeplane.controlplane.api.context import SESSION_COOKIE, Context, Info, with_instance
from nodeplane.controlplane.api.types import (
    AlertRule,
    AlertRuleSetting,
    ApiKey,
    ApiKeyKind,
    CreateApiKeyPayload,
    CreateOrganizationPayload,
    DesiredState,
    Executor,
    InvitePayload,
    LifecycleAction,
    LoginPayload,
    Me,
    Member,
    MemberAccessPayload,
    Node,
    Organization,
    RebindExecutorPayload,
    RejectedObservation,
    Role,
    SyncExecutorPayload,
)
from nodeplane.controlplane.api.validation import datetime_input, json_list, parse_wire
from nodeplane.controlplane.api.views import me_view, node_views
from nodeplane.controlplane.api.webhooks import WebhookMutation
from nodeplane.controlplane.auth.authenticate import authenticate
from nodeplane.controlplane.auth.principal import ApiKeyKind as ApiKeyKindValue
from nodeplane.controlplane.auth.principal import Role as RoleValue
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services import (
    accounts,
    alerts,
    api_keys,
    executors,
    logs,
    members,
    nodes,
)
from nodeplane.controlplane.services.accounts import LoginResult
from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import UnitOfWork
from nodeplane.protocol import DesiredState as DesiredStateValue
from nodeplane.protocol import LifecycleAction as LifecycleActionValue
from nodeplane.protocol import RuntimeEvent, SyncExecutorRequest
from nodeplane.protocol.logs import LogChunk


@strawberry.input
class CreateNodeInput:
    executor_id: UUID
    name: str
    spec: JSON


@strawberry.input
class UpdateNodeInput:
    node_id: UUID
    clients: JSON | None = strawberry.field(
        default=None, description="Per role {name, version}, laid over the current clients."
    )
    overrides: JSON | None = None
    resources: JSON | None = None
    storage: JSON | None = strawberry.field(
        default=None, description="{size}: storage may only grow."
    )
    rollout: JSON | None = strawberry.field(
        default=None, description="{healthWindowSeconds, autoRollback}, laid over the current."
    )
    spec: JSON | None = strawberry.field(
        default=None,
        description="A whole new spec (its desiredState and restartGeneration are ignored).",
    )
    expected_revision: int | None = None
    cause: str | None = None


async def _node_view(ctx: Context, uow: UnitOfWork, row: models.Node) -> Node:
    """The API view of `row`, read in the transaction that wrote it: a second transaction for
    the executor's row cost a lifecycle action two round trips and a checkout more."""
    return (await node_views(uow.session, ctx, [row]))[0]


def _client_address(ctx: Context) -> str | None:
    # The ASGI client: the TCP peer, or what a trusted proxy forwarded (`--forwarded-allow-ips`).
    return ctx.request.client.host if ctx.request.client else None


def _member_access(change: members.MemberChange) -> MemberAccessPayload:
    return MemberAccessPayload(
        member=Member.from_rows(change.member, change.user),
        sessions_ended=change.sessions_ended,
        api_keys_revoked=change.api_keys_revoked,
    )


async def _signed_in(ctx: Context, result: LoginResult) -> LoginPayload:
    ctx.response.set_cookie(
        SESSION_COOKIE,
        result.token,
        max_age=int(ctx.settings.session_ttl_hours * 3600),
        httponly=True,
        samesite="lax",
        secure=ctx.request.url.scheme == "https",
    )
    ctx.principal = await authenticate(ctx.db, result.token)
    async with ctx.db.read() as session:
        me = await me_view(session, ctx)
    assert me is not None
    return LoginPayload(token=result.token, me=me)


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise DomainError(ErrorCode.INVALID_INPUT, "threshold must be a number", field="threshold")
    return value


@strawberry.type
class Mutation(WebhookMutation):
    @strawberry.mutation(
        description="Set an alert rule's organization default (owners and admins); a null "
        "threshold means the built-in one."
    )
    async def set_alert_default(
        self,
        info: Info,
        rule: AlertRule,  # type: ignore[valid-type]
        enabled: bool,
        threshold: float | None = None,
    ) -> list[AlertRuleSetting]:
        async with info.context.db.write() as uow:
            rows = await alerts.set_default(
                uow, info.context.principal, rule, enabled, _finite(threshold)
            )
        return [AlertRuleSetting.from_model(r) for r in rows]

    @strawberry.mutation(
        description="Override an alert rule for one node (owners and admins); null fields "
        "inherit the organization's, and both null removes the override."
    )
    async def set_node_alert_override(
        self,
        info: Info,
        node_id: UUID,
        rule: AlertRule,  # type: ignore[valid-type]
        enabled: bool | None = None,
        threshold: float | None = None,
    ) -> list[AlertRuleSetting]:
        async with info.context.db.write() as uow:
            rows = await alerts.set_node_override(
                uow, info.context.principal, node_id, rule, enabled, _finite(threshold)
            )
        return [AlertRuleSetting.from_model(r) for r in rows]

    @strawberry.mutation(description="Sign in; the token works as a Bearer token and as a cookie.")
    async def login(
        self, info: Info, email: str, password: str, organization_id: UUID | None = None
    ) -> LoginPayload:
        ctx = info.context
        result = await accounts.login(
            ctx.db,
            ctx.settings,
            email,
            password,
            organization_id,
            client_address=_client_address(ctx),
        )
        return await _signed_in(ctx, result)

    @strawberry.mutation
    async def logout(self, info: Info) -> bool:
        async with info.context.db.write() as uow:
            done = await accounts.logout(uow, info.context.principal)
        info.context.response.delete_cookie(SESSION_COOKIE)
        return done

    @strawberry.mutation
    async def invite_member(self, info: Info, email: str, role: Role) -> InvitePayload:  # type: ignore[valid-type]
        async with info.context.db.write() as uow:
            result = await accounts.invite_member(
                uow, info.context.principal, email, RoleValue(role)
            )
        return InvitePayload(
            token=result.token,
            email=result.invite.email,
            role=RoleValue(result.invite.role),
            expires_at=result.invite.expires_at,
        )

    @strawberry.mutation(
        description="Join with an invite: signed in as the invited email, or signed out to create "
        "a new account with `password`."
    )
    async def accept_invite(
        self, info: Info, token: str, password: str | None = None
    ) -> LoginPayload:
        ctx = info.context
        result = await accounts.accept_invite(
            ctx.db,
            ctx.settings,
            ctx.principal,
            token,
            password,
            client_address=_client_address(ctx),
        )
        return await _signed_in(ctx, result)

    @strawberry.mutation(
        description="Remove a member: their sessions here end and their personal keys are revoked."
    )
    async def remove_member(self, info: Info, member_id: UUID) -> MemberAccessPayload:
        async with info.context.db.write() as uow:
            change = await members.remove_member(uow, info.context.principal, member_id)
        return _member_access(change)

    @strawberry.mutation(description="Give a member another role (only owners make owners).")
    async def change_member_role(
        self,
        info: Info,
        member_id: UUID,
        role: Role,  # type: ignore[valid-type]
    ) -> Member:
        async with info.context.db.write() as uow:
            change = await members.change_member_role(
                uow, info.context.principal, member_id, RoleValue(role)
            )
        return Member.from_rows(change.member, change.user)

    @strawberry.mutation(
        description="End a member's sessions in this organization and revoke their personal keys."
    )
    async def revoke_sessions(self, info: Info, member_id: UUID) -> MemberAccessPayload:
        async with info.context.db.write() as uow:
            change = await members.revoke_sessions(uow, info.context.principal, member_id)
        return _member_access(change)

    @strawberry.mutation
    async def create_organization(
        self, info: Info, name: str, owner_email: str
    ) -> CreateOrganizationPayload:
        async with info.context.db.write() as uow:
            org, invite = await accounts.create_organization(
                uow, info.context.principal, name, owner_email
            )
        return CreateOrganizationPayload(
            organization=Organization.from_row(org), invite_token=invite.token
        )

    @strawberry.mutation(description="Create an API key; the secret is returned only this once.")
    async def create_api_key(
        self,
        info: Info,
        name: str,
        kind: ApiKeyKind,  # type: ignore[valid-type]
        expires_at: datetime | None = None,
        executor_id: Annotated[
            UUID | None,
            strawberry.argument(description="Bind a new executor key to this existing executor."),
        ] = None,
    ) -> CreateApiKeyPayload:
        async with info.context.db.write() as uow:
            created = await api_keys.create_api_key(
                uow,
                info.context.principal,
                name=name,
                kind=ApiKeyKindValue(kind),
                expires_at=datetime_input(expires_at, field="expiresAt"),
                executor_id=executor_id,
            )
        return CreateApiKeyPayload(api_key=ApiKey.from_row(created.key), secret=created.secret)

    @strawberry.mutation
    async def revoke_api_key(self, info: Info, id: UUID) -> ApiKey:
        async with info.context.db.write() as uow:
            key = await api_keys.revoke_api_key(uow, info.context.principal, id)
        return ApiKey.from_row(key)

    @strawberry.mutation(description="Deploy a node: revision 1 of its spec.")
    async def create_node(self, info: Info, input: CreateNodeInput) -> Node:
        async with info.context.db.write() as uow:
            row = await nodes.create_node(
                uow,
                info.context.principal,
                executor_id=input.executor_id,
                name=input.name,
                spec=input.spec,
            )
            view = await _node_view(info.context, uow, row)
        return view

    @strawberry.mutation(
        description="Edit a node as a new revision: client versions, overrides, resources, "
        "storage growth."
    )
    async def update_node(self, info: Info, input: UpdateNodeInput) -> Node:
        async with info.context.db.write() as uow:
            row = await nodes.update_node(
                uow,
                info.context.principal,
                input.node_id,
                clients=input.clients,
                overrides=input.overrides,
                resources=input.resources,
                storage=input.storage,
                rollout=input.rollout,
                spec=input.spec,
                expected_revision=input.expected_revision,
                cause=input.cause,
            )
            view = await _node_view(info.context, uow, row)
        return view

    @strawberry.mutation(
        description="A new revision whose spec is an earlier revision's (desired state kept)."
    )
    async def rollback_node(
        self,
        info: Info,
        node_id: UUID,
        to_revision: int,
        expected_revision: int | None = None,
        desired_state: DesiredState | None = None,  # type: ignore[valid-type]
    ) -> Node:
        async with info.context.db.write() as uow:
            row = await nodes.rollback_node(
                uow,
                info.context.principal,
                node_id,
                to_revision=to_revision,
                expected_revision=expected_revision,
                desired_state=DesiredStateValue(desired_state) if desired_state else None,
            )
            view = await _node_view(info.context, uow, row)
        return view

    @strawberry.mutation(description="Start, stop or restart: a change of desired state.")
    async def request_node_lifecycle_action(
        self,
        info: Info,
        node_id: UUID,
        action: LifecycleAction,  # type: ignore[valid-type]
        expected_revision: int | None = None,
    ) -> Node:
        async with info.context.db.write() as uow:
            row = await nodes.request_lifecycle_action(
                uow,
                info.context.principal,
                node_id,
                LifecycleActionValue(action),
                expected_revision=expected_revision,
            )
            view = await _node_view(info.context, uow, row)
        return view

    @strawberry.mutation(description="Delete a node: its executor tears it down, then it is gone.")
    async def delete_node(self, info: Info, node_id: UUID, retain_data: bool = False) -> Node:
        async with info.context.db.write() as uow:
            row = await nodes.delete_node(
                uow, info.context.principal, node_id, retain_data=retain_data
            )
            view = await _node_view(info.context, uow, row)
        return view

    @strawberry.mutation(description="Executor heartbeat with capabilities and observed states.")
    async def sync_executor(self, info: Info, input: JSON) -> SyncExecutorPayload:
        # What an executor's own sync document asks is answered without this resolver, by the
        # same steps (api/executor_calls.py): a change here is a change there.
        request = with_instance(
            parse_wire(SyncExecutorRequest, input, field="input"), info.context.instance_id
        )
        result = await executors.sync(
            info.context.db, info.context.principal, request, info.context.heartbeat
        )
        return SyncExecutorPayload(
            executor=Executor.from_row(result.executor, info.context.settings.heartbeat_timeout),
            rejected=[RejectedObservation(node_id=k, reason=v) for k, v in result.rejected.items()],
        )

    @strawberry.mutation(description="The executor has torn a deleted node down.")
    async def confirm_node_teardown(self, info: Info, node_id: UUID) -> bool:
        ctx = info.context
        async with executors.recording_refusals(ctx.db), ctx.db.write() as uow:
            await executors.check_instance(
                uow.session, ctx.principal, ctx.instance_id, ctx.heartbeat
            )
            return await executors.confirm_teardown(uow, ctx.principal, node_id)

    @strawberry.mutation(description="Runtime events from an executor: crashes, init failures.")
    async def report_runtime_events(self, info: Info, events: JSON) -> int:
        # One refused event refuses the whole call: nothing is written.
        parsed = [
            parse_wire(RuntimeEvent, e, field=f"events[{i}]")
            for i, e in enumerate(
                json_list(events, "events", max_items=executors.MAX_RUNTIME_EVENTS_PER_CALL)
            )
        ]
        ctx = info.context
        async with executors.recording_refusals(ctx.db), ctx.db.write() as uow:
            await executors.check_instance(
                uow.session, ctx.principal, ctx.instance_id, ctx.heartbeat
            )
            return await executors.report_runtime_events(uow, ctx.principal, parsed)

    @strawberry.mutation(
        description="Lines of a live-log session from its executor; false when the session is "
        "not open (its viewer left): the executor stops serving it."
    )
    async def post_log_chunk(self, info: Info, chunk: JSON) -> bool:
        parsed = parse_wire(LogChunk, chunk, field="chunk")
        return await logs.post_chunk(info.context.db, info.context.principal, parsed)

    @strawberry.mutation(
        description="Bind an executor key to an executor; the keys bound before are revoked."
    )
    async def rebind_executor(
        self, info: Info, executor_id: UUID, api_key_id: UUID
    ) -> RebindExecutorPayload:
        async with info.context.db.write() as uow:
            result = await executors.rebind_executor(
                uow, info.context.principal, executor_id, api_key_id
            )
        return RebindExecutorPayload(
            executor=Executor.from_row(result.executor, info.context.settings.heartbeat_timeout),
            api_key=ApiKey.from_row(result.key),
            revoked_keys=[ApiKey.from_row(k) for k in result.revoked],
        )


__all__ = ["Me", "Mutation"]
