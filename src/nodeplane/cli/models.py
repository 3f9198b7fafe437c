"""Typed views of what the CLI reads: nodes, executors, events, revisions, keys and members.

msgspec Structs rather than pydantic models: the CLI is a short-lived process, and importing
pydantic (with typer 0.29 and later, which coerces every parameter through it) was a third of
`nodeplane nodes list`'s time (issue 8: 300 ms). msgspec imports in a few milliseconds and
validates at least as strictly (no str to int coercion, RFC 3339 times, UUIDs). An answer that
does not fit raises msgspec's ValidationError; the client turns it into its own failure.
"""

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Self, TypeAlias, TypeVar
from uuid import UUID

import msgspec
from msgspec.structs import force_setattr

from nodeplane.protocol import DesiredState, EventLevel, NodePhase


class ByName:
    """Marks a field that GraphQL sends as an enum name (RUNNING): it is read as a string and
    kept lower case, as the protocol's values are, converted by `value` (an enum, or str)."""

    def __init__(self, value: Callable[[str], Any]) -> None:
        self.value = value


# What mypy sees is the type the field holds once read; what msgspec reads is a string, which
# ApiModel.__post_init__ lowers and converts.
if TYPE_CHECKING:
    Phase: TypeAlias = NodePhase
    Desired: TypeAlias = DesiredState
    Level: TypeAlias = EventLevel
    Lower: TypeAlias = str
else:
    Phase = Annotated[str, ByName(NodePhase)]
    Desired = Annotated[str, ByName(DesiredState)]
    Level = Annotated[str, ByName(EventLevel)]
    Lower = Annotated[str, ByName(str)]


class ApiModel(msgspec.Struct, rename="camel", frozen=True):
    """camelCase from the API, snake_case in Python; fields the CLI does not ask for are ignored.

    Subclasses say `frozen=True, kw_only=True`: mypy needs the first, and msgspec does not
    inherit the second, which lets optional fields stand before required ones where the API's
    JSON has them, so that `--output json` keeps its order.
    """

    # Field name -> conversion of its lowered value, for the fields marked ByName.
    by_name: ClassVar[Mapping[str, Callable[[str], Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        marked = dict(cls.by_name)
        for name, hint in cls.__annotations__.items():
            # A mark is on the field's type, or on a member of its union (Lower | None).
            for candidate in (hint, *getattr(hint, "__args__", ())):
                for meta in getattr(candidate, "__metadata__", ()):
                    if isinstance(meta, ByName):
                        marked[name] = meta.value
        cls.by_name = marked

    def __post_init__(self) -> None:
        for name, convert in self.by_name.items():
            value = getattr(self, name)
            if not isinstance(value, str):
                continue
            try:
                force_setattr(self, name, convert(value.lower()))
            except ValueError:
                # msgspec reports a ValueError of __post_init__ as a ValidationError of this
                # object, so the message names the field, as the API spells it.
                api_name = self.__struct_encode_fields__[self.__struct_fields__.index(name)]
                raise ValueError(f"Invalid enum value {value!r} of `{api_name}`") from None

    @classmethod
    def from_api(cls, raw: Any) -> Self:
        """Read one answer (decoded JSON); raises msgspec.ValidationError when it does not fit."""
        return msgspec.convert(raw, cls)

    def to_json(self) -> dict[str, Any]:
        """The form `--output json` prints: camelCase, enums as their lower-case values."""
        dumped: dict[str, Any] = msgspec.to_builtins(self)
        return dumped


class ExecutorRef(ApiModel, frozen=True, kw_only=True):
    """The executor a node runs on, as embedded in the node."""

    id: UUID
    name: str
    status: Lower


def _executor_name(executor: ExecutorRef | None, executor_id: UUID) -> str:
    return executor.name if executor else str(executor_id)


class Node(ApiModel, frozen=True, kw_only=True):
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


class NodeRow(ApiModel, frozen=True, kw_only=True):
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


class Executor(ApiModel, frozen=True, kw_only=True):
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


class Event(ApiModel, frozen=True, kw_only=True):
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


class Incident(ApiModel, frozen=True, kw_only=True):
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


class Revision(ApiModel, frozen=True, kw_only=True):
    """One immutable revision of a node's spec."""

    node_id: UUID
    node_name: str
    revision: int
    spec: dict[str, Any]
    author: str
    cause: str
    created_at: datetime


class ApiKey(ApiModel, frozen=True, kw_only=True):
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


class CreatedApiKey(ApiModel, frozen=True, kw_only=True):
    """A new key and its secret, which the API shows only this once."""

    api_key: ApiKey
    secret: str


class RebindResult(ApiModel, frozen=True, kw_only=True):
    """An executor bound to a key, and the keys that were bound to it before (now revoked)."""

    executor: Executor
    api_key: ApiKey
    revoked_keys: list[ApiKey]


class Member(ApiModel, frozen=True, kw_only=True):
    """A member of the caller's organization."""

    id: UUID
    email: str
    role: Lower
    created_at: datetime


class MemberAccess(ApiModel, frozen=True, kw_only=True):
    """A member after a removal or a revocation, and the access that was ended."""

    member: Member
    sessions_ended: int
    api_keys_revoked: int


class Invite(ApiModel, frozen=True, kw_only=True):
    """A new invite; its token is in the answer only."""

    token: str
    email: str
    role: Lower
    expires_at: datetime


class Organization(ApiModel, frozen=True, kw_only=True):
    """The organization a caller acts in."""

    id: UUID
    name: str


class Me(ApiModel, frozen=True, kw_only=True):
    """The caller: a user (session or personal key) or an executor key."""

    email: str | None = None
    role: Lower | None = None
    kind: str
    organization: Organization | None = None


class Session(ApiModel, frozen=True, kw_only=True):
    """A signed-in session: its bearer token and who it belongs to."""

    token: str
    me: Me


T = TypeVar("T", bound=ApiModel)


class PageInfo(ApiModel, frozen=True, kw_only=True):
    """Where a keyset-paginated list goes on."""

    end_cursor: str | None
    has_next_page: bool


class Page(ApiModel, Generic[T], frozen=True, kw_only=True):
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
