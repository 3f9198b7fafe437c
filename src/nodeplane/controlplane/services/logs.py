"""Live logs (issue 10): open a log session for a viewer, hold an executor's poll for its
sessions, take its lines. The sessions and lines travel through store/log_relay.py; nothing is
stored.

Scoping: a member (any role) of the node's organization may read its logs; anyone else is told
the node does not exist. An executor key may read no logs, and may post lines only for sessions
on its own nodes.
"""

import asyncio
import time
import uuid
from collections.abc import Sequence
from uuid import UUID

from nodeplane.controlplane.auth.principal import Principal, require_executor, require_principal
from nodeplane.controlplane.errors import DomainError, ErrorCode, forbidden, not_found
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.services.executors import check_instance, is_online
from nodeplane.controlplane.services.heartbeat import Heartbeat
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.log_relay import LogViewer, OpenSession
from nodeplane.controlplane.store.models import Executor
from nodeplane.protocol import MAX_POLL_WAIT_SECONDS, ExecutorKind
from nodeplane.protocol.logs import (
    DEFAULT_LOG_TAIL,
    MAX_LOG_SESSIONS_PER_POLL,
    MAX_LOG_TAIL,
    MAX_LOG_VIEWERS_PER_NODE,
    LogChunk,
    LogLevel,
    LogSessionRequest,
    parse_level,
    role_problem,
)


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_INPUT, message, field=field)


def check_request(
    role: str | None, tail: int | str | None, level: str | None
) -> tuple[str | None, int, LogLevel]:
    """The viewer's role, tail and minimum level, checked; `invalid_input` naming the field."""
    if role is not None and (problem := role_problem(role)):
        raise _invalid("role", f"role {problem}")
    if tail is None or tail == "":
        count = DEFAULT_LOG_TAIL
    else:
        try:
            count = int(tail)
        except ValueError:
            raise _invalid("tail", "tail must be a whole number") from None
        if not 0 <= count <= MAX_LOG_TAIL:
            raise _invalid("tail", f"tail must be between 0 and {MAX_LOG_TAIL}")
    minimum = LogLevel.DEBUG
    if level:
        parsed = parse_level(level)
        if parsed is None:
            raise _invalid("level", "level must be one of debug, info, warn, error")
        minimum = parsed
    return role, count, minimum


async def open_view(
    db: Database,
    principal: Principal | None,
    node_id: UUID,
    *,
    role: str | None,
    tail: int,
    level: LogLevel,
    follow: bool,
    heartbeat_timeout: float,
) -> LogViewer:
    """Open a log session on the node's process `role` (None: the node's first role) for one
    viewer. Typed errors: not_found (no such node in the caller's organization), invalid_input
    (a role the node has not), node_deleting, logs_unavailable (an operator's node),
    executor_offline, rate_limited (MAX_LOG_VIEWERS_PER_NODE open already)."""
    p = require_principal(principal)
    if p.is_executor:
        raise forbidden("executor keys cannot read logs")
    async with db.read() as session:
        node = await node_service.get_node(session, p, node_id)
        if node is None:
            raise not_found("node")
        executor = await session.get(Executor, node.executor_id)
    assert executor is not None
    if node.deleted_at is not None:
        raise DomainError(ErrorCode.NODE_DELETING, f"node {node.name!r} is being deleted")
    roles = list((node.spec.get("clients") or {}).keys())
    if role is None:
        if not roles:
            raise _invalid("role", f"node {node.name!r} has no processes")
        role = roles[0]
    elif role not in roles:
        raise _invalid("role", f"node {node.name!r} has no role {role!r} (it has {roles})")
    if executor.kind == ExecutorKind.OPERATOR.value:
        raise DomainError(
            ErrorCode.LOGS_UNAVAILABLE,
            f"logs are not available for {executor.kind} executors ({executor.name}): "
            "read the Pod's log with kubectl",
        )
    if not is_online(executor, heartbeat_timeout):
        raise DomainError(
            ErrorCode.EXECUTOR_OFFLINE,
            f"executor {executor.name} is offline; its logs cannot be read now",
        )
    if db.logs.sessions_of_node(node.id) >= MAX_LOG_VIEWERS_PER_NODE:
        raise DomainError(
            ErrorCode.RATE_LIMITED,
            f"node {node.name!r} has {MAX_LOG_VIEWERS_PER_NODE} log viewers already",
        )
    request = LogSessionRequest(
        session_id=uuid.uuid4(),
        node_id=node.id,
        role=role,
        tail=tail,
        level=level,
        follow=follow,
    )
    return await db.logs.open(OpenSession(request, node.organization_id, executor.id))


async def poll_sessions(
    db: Database,
    principal: Principal | None,
    known: Sequence[UUID],
    wait_seconds: float,
    max_wait: float = MAX_POLL_WAIT_SECONDS,
    instance: UUID | None = None,
    heartbeat: Heartbeat | None = None,
) -> list[LogSessionRequest]:
    """The executor's open log sessions, at once when they differ from `known`, else held up to
    `wait_seconds` until they change (a viewer came or left). With `instance` and `heartbeat`,
    a process that is not the executor's live instance is refused first (InstanceConflict), as
    for the spec poll: a cloned host serves no one's logs."""
    p = require_executor(principal)
    if p.executor_id is None:
        raise DomainError(
            ErrorCode.INVALID_ACTION, "call syncExecutor once before polling for log sessions"
        )
    if instance is not None and heartbeat is not None:
        async with db.quick_read() as session:
            await check_instance(session, principal, instance, heartbeat)
    executor_id = p.executor_id
    wait_seconds = max(0.0, min(wait_seconds, max_wait))
    deadline = time.monotonic() + wait_seconds
    held = set(known)
    relay = db.logs
    # A process that has not yet heard every session announced must not answer with a list
    # that lacks one: the executor would stop serving it.
    await relay.wait_warm(wait_seconds)
    while True:
        waiter = relay.subscribe(executor_id)
        try:
            current = relay.sessions_of(executor_id)[:MAX_LOG_SESSIONS_PER_POLL]
            remaining = deadline - time.monotonic()
            if {s.session_id for s in current} != held or remaining <= 0 or relay.closing:
                return current
            try:
                async with asyncio.timeout(remaining):
                    await waiter.wait()
            except TimeoutError:
                return current
        finally:
            relay.unsubscribe(executor_id, waiter)


async def post_chunk(db: Database, principal: Principal | None, chunk: LogChunk) -> bool:
    """Pass the executor's lines on to the session's viewer. False when the session is not open
    (ended, or never one of this executor's): the executor stops serving it."""
    p = require_executor(principal)
    if p.executor_id is None:
        return False
    return await db.logs.deliver(p.executor_id, chunk)


async def executor_problem(
    db: Database, executor_id: UUID, heartbeat_timeout: float
) -> DomainError | None:
    """Why an open session's executor can no longer serve it (gone, or offline), or None."""
    async with db.read() as session:
        executor = await session.get(Executor, executor_id)
    if executor is None or not is_online(executor, heartbeat_timeout):
        name = executor.name if executor is not None else "of this node"
        return DomainError(
            ErrorCode.EXECUTOR_OFFLINE, f"executor {name} went offline; the log stopped"
        )
    return None
