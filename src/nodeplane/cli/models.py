"""Typed views of what the CLI reads: nodes, executors, events, revisions, keys and members.

pydantic models, built lazily (`defer_build`): pydantic makes a model's validator when the model
first validates, not when its class is created, so a command pays for the models it reads only
(`nodes list`: NodeRow, ExecutorRef, PageInfo and one Page), not for all of them at start. An answer
that does not fit raises pydantic's ValidationError; the client turns it into its own failure.
"""

from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel

from nodeplane.protocol import DesiredState, EventLevel, NodePhase


def _lower(value: Any) -> Any:
    # GraphQL enums travel by name (RUNNING); the protocol's values are lower case (running).
    return value.lower() if isinstance(value, str) else value


Phase = Annotated[NodePhase, BeforeValidator(_lower)]
Desired = Annotated[DesiredState, BeforeValidator(_lower)]
Level = Annotated[EventLevel, BeforeValidator(_lower)]
Lower = Annotated[str, BeforeValidator(_lower)]


class ApiModel(BaseModel):
    """camelCase from the API, snake_case in Python; fields the CLI does not ask for are ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        defer_build=True,
    )

    def to_json(self) -> dict[str, Any]:
        """The form `--output json` prints: camelCase, enums as their lower-case values."""
        return self.model_dump(mode="json", by_alias=True)


class ExecutorRef(ApiModel):
    """The executor a node runs on, as embedded in the node."""

    id: UUID
    name: str
    status: Lower


def _executor_name(executor: ExecutorRef | None, executor_id: UUID) -> str:
    return executor.name if executor else str(executor_id)


class Node(ApiModel):
    """A node with its spec, observed state and derived phase."""

    id: UUID
    name: str
    chain: str
    network: str
    phase: Phase
    desired_state: Desired
    revision: int
    observed_revision: int | None = None
    pending_change: bool
    stale: bool
    spec: dict[str, Any]
    observed: dict[str, Any] | None = None
    observed_at: datetime | None = None
    deleted_at: datetime | None = None
    retain_data: bool = False
    created_at: datetime
    updated_at: datetime
    executor_id: UUID
    executor: ExecutorRef | None = None

    @property
    def executor_name(self) -> str:
        """The executor's name, or its id when the executor row is not visible."""
        return _executor_name(self.executor, self.executor_id)


class NodeRow(ApiModel):
    """A node as a list shows it: Node's fields without its spec, observation and times (a
    third of the bytes). Not a base of Node, which keeps the order its JSON always had."""

    id: UUID
    name: str
    chain: str
    network: str
    phase: Phase
    desired_state: Desired
    revision: int
    observed_revision: int | None = None
    pending_change: bool
    stale: bool
    executor_id: UUID
    executor: ExecutorRef | None = None

    @property
    def executor_name(self) -> str:
        """The executor's name, or its id when the executor row is not visible."""
        return _executor_name(self.executor, self.executor_id)


class Executor(ApiModel):
    """An executor (agent or operator) of the organization."""

    id: UUID
    name: str
    kind: str
    version: str
    status: Lower
    last_sync_at: datetime | None = None
    node_count: int
    capabilities: dict[str, Any]
    created_at: datetime


class Event(ApiModel):
    """One entry of the events feed."""

    id: str
    type: str
    level: Level
    source: str
    message: str
    actor_type: str
    actor: str
    node_id: UUID | None = None
    node_name: str | None = None
    executor_id: UUID | None = None
    payload: dict[str, Any]
    created_at: datetime


class Incident(ApiModel):
    """An alert incident: a rule's condition holding for a node or an executor."""

    id: UUID
    rule: Lower
    severity: str
    state: Lower
    subject_kind: str
    subject_id: UUID
    subject_name: str
    node_id: UUID | None = None
    executor_id: UUID | None = None
    message: str
    value: float | None = None
    threshold: float | None = None
    details: dict[str, Any]
    opened_at: datetime
    resolved_at: datetime | None = None
    resolution: str | None = None


class Revision(ApiModel):
    """One immutable revision of a node's spec."""

    node_id: UUID
    node_name: str
    revision: int
    spec: dict[str, Any]
    author: str
    cause: str
    created_at: datetime


class ApiKey(ApiModel):
    """An API key's metadata (never its secret)."""

    id: UUID
    name: str
    kind: Lower
    prefix: str
    enabled: bool
    executor_id: UUID | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    created_at: datetime
    revoked_at: datetime | None = None


class CreatedApiKey(ApiModel):
    """A new key and its secret, which the API shows only this once."""

    api_key: ApiKey
    secret: str


class RebindResult(ApiModel):
    """An executor bound to a key, and the keys that were bound to it before (now revoked)."""

    executor: Executor
    api_key: ApiKey
    revoked_keys: list[ApiKey]


class Member(ApiModel):
    """A member of the caller's organization."""

    id: UUID
    email: str
    role: Lower
    created_at: datetime


class MemberAccess(ApiModel):
    """A member after a removal or a revocation, and the access that was ended."""

    member: Member
    sessions_ended: int
    api_keys_revoked: int


class Invite(ApiModel):
    """A new invite; its token is in the answer only."""

    token: str
    email: str
    role: Lower
    expires_at: datetime


class Organization(ApiModel):
    """The organization a caller acts in."""

    id: UUID
    name: str


class Me(ApiModel):
    """The caller: a user (session or personal key) or an executor key."""

    email: str | None = None
    role: Lower | None = None
    kind: str
    organization: Organization | None = None


class Session(ApiModel):
    """A signed-in session: its bearer token and who it belongs to."""

    token: str
    me: Me


T = TypeVar("T", bound=ApiModel)


class PageInfo(ApiModel):
    """Where a keyset-paginated list goes on."""

    end_cursor: str | None
    has_next_page: bool


class Page(ApiModel, Generic[T]):
    """One page of a keyset-paginated list, as the API answers a connection: {items, pageInfo}."""

    items: list[T]
    page_info: PageInfo

    @property
    def end_cursor(self) -> str | None:
        """The cursor to ask for the next page after, if any."""
        return self.page_info.end_cursor

    @property
    def has_next_page(self) -> bool:
        """Whether more items follow this page."""
        return self.page_info.has_next_page
