"""Typed views of what the CLI reads: nodes, executors, events, revisions, keys and members.

They are immutable records that `ApiModel.from_api` decodes from the API's JSON, checking every
field against its annotation, so an answer of the wrong shape is an `AnswerError` (the client
reports it as such) rather than a model holding the wrong types. They are not pydantic models:
building pydantic's validators for these classes cost every command 50-100 ms at start (issue 8:
the CLI answers in 300 ms), to read a few hundred rows.
"""

import inspect
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from types import NoneType, UnionType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    NamedTuple,
    Self,
    TypeVar,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)
from uuid import UUID

from nodeplane.protocol import DesiredState, EventLevel, NodePhase


class AnswerError(Exception):
    """An answer of the control plane without the shape the CLI asked for (another version)."""

    def __init__(self, problem: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path

    def inside(self, step: str) -> "AnswerError":
        """The same problem, seen from the object that holds this value at `step`."""
        return AnswerError(self.problem, (step, *self.path))

    def __str__(self) -> str:
        where = "".join(step if step.startswith("[") else f".{step}" for step in self.path)
        return f"{where.lstrip('.')}: {self.problem}" if where else self.problem


class _Lowercase:
    """Marks a string field that arrives as a GraphQL enum name (ONLINE) and is kept in the
    protocol's lower case (online)."""


Lower = Annotated[str, _Lowercase()]

Decoder = Callable[[Any], Any]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise AnswerError(f"expected a string, got {_shown(value)}")


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise AnswerError(f"expected an integer, got {_shown(value)}")


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise AnswerError(f"expected a number, got {_shown(value)}")


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise AnswerError(f"expected true or false, got {_shown(value)}")


def _uuid(value: Any) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(_text(value))
    except ValueError:
        raise AnswerError(f"expected a UUID, got {_shown(value)}") from None


def _moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(_text(value))
    except ValueError:
        raise AnswerError(f"expected an ISO 8601 date and time, got {_shown(value)}") from None


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise AnswerError(f"expected an object, got {_shown(value)}")


def _array(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    raise AnswerError(f"expected a list, got {_shown(value)}")


def _enum(kind: type[Enum]) -> Decoder:
    allowed = ", ".join(str(member.value) for member in kind)

    def decode(value: Any) -> Enum:
        if isinstance(value, kind):
            return value
        try:
            # GraphQL enums travel by name (RUNNING); the protocol's values are lower case.
            return kind(_text(value).lower())
        except ValueError:
            raise AnswerError(f"expected one of {allowed}, got {_shown(value)}") from None

    return decode


def _list_of(item: Decoder) -> Decoder:
    def decode(value: Any) -> list[Any]:
        items = []
        for index, raw in enumerate(_array(value)):
            try:
                items.append(item(raw))
            except AnswerError as exc:
                raise exc.inside(f"[{index}]") from None
        return items

    return decode


def _optional(inner: Decoder) -> Decoder:
    return lambda value: None if value is None else inner(value)


def _lower(inner: Decoder) -> Decoder:
    return lambda value: inner(value).lower()


_SCALARS: dict[Any, Decoder] = {
    str: _text,
    int: _integer,
    float: _number,
    bool: _boolean,
    UUID: _uuid,
    datetime: _moment,
    Any: lambda value: value,
}


def _decoder(hint: Any) -> Decoder:
    """How to decode a JSON value into a field annotated `hint`."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *marks = get_args(hint)
        inner = _decoder(base)
        return _lower(inner) if any(isinstance(m, _Lowercase) for m in marks) else inner
    if origin is Union or origin is UnionType:
        (present,) = [arg for arg in get_args(hint) if arg is not NoneType]
        return _optional(_decoder(present))
    if origin is list:
        return _list_of(_decoder(get_args(hint)[0]))
    if origin is dict:
        return _object
    if isinstance(hint, type) and issubclass(hint, ApiModel):
        return hint.from_api
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    return _SCALARS[hint]  # a KeyError here is a model annotated with a type not handled above


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _json(value: Any) -> Any:
    if isinstance(value, ApiModel):
        return value.to_json()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        # UTC as Z, as the pydantic models this replaces printed it (scripts read these).
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, list):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    return value


class _Field(NamedTuple):
    name: str
    key: str  # the API's camelCase name
    decode: Decoder
    required: bool


_PLANS: dict[type, tuple[_Field, ...]] = {}


@dataclass_transform(kw_only_default=True, frozen_default=True)
class ApiModel:
    """A record read from the API: camelCase there, snake_case here; fields the CLI does not ask
    for are ignored.

    A subclass declares its fields as annotations, with a default where the API may leave one
    out; instances are made by keyword, immutable, equal when their fields are, and print as
    `Node(id=..., ...)`, as dataclasses do. These few methods stand in for @dataclass, which
    compiles five or six functions per class as the module is imported: 18 models took 10-15 ms
    of every command's start.
    """

    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(inspect.get_annotations(cls))

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        for name in cls._fields:
            if name in values:
                value = values.pop(name)
            elif name in cls.__dict__:  # the field's default
                value = cls.__dict__[name]
            else:
                raise TypeError(f"{cls.__name__}() is missing the field {name!r}")
            object.__setattr__(self, name, value)
        if values:
            raise TypeError(f"{cls.__name__}() has no field {', '.join(map(repr, values))}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    __hash__ = None  # type: ignore[assignment]  # as unhashable as the dicts it may hold

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"

    @classmethod
    def _plan(cls) -> tuple[_Field, ...]:
        plan = _PLANS.get(cls)
        if plan is None:
            # Built on first use, from the annotations, for the models a command reads.
            hints = get_type_hints(cls, include_extras=True)
            plan = tuple(
                _Field(
                    name=name,
                    key=_camel(name),
                    decode=_decoder(hints[name]),
                    required=name not in cls.__dict__,
                )
                for name in cls._fields
            )
            _PLANS[cls] = plan
        return plan

    @classmethod
    def from_api(cls, raw: Any) -> Self:
        """The model from the API's JSON object; raises AnswerError when it does not fit."""
        body = _object(raw)
        values: dict[str, Any] = {}
        for field in cls._plan():
            if field.key in body:
                try:
                    values[field.name] = field.decode(body[field.key])
                except AnswerError as exc:
                    raise exc.inside(field.key) from None
            elif field.required:
                raise AnswerError("missing", (field.key,))
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The form `--output json` prints: camelCase, enums as their lower-case values."""
        return {field.key: _json(getattr(self, field.name)) for field in self._plan()}


class ExecutorRef(ApiModel):
    """The executor a node runs on, as embedded in the node."""

    id: UUID
    name: str
    status: Lower


class Node(ApiModel):
    """A node with its spec, observed state and derived phase."""

    id: UUID
    name: str
    chain: str
    network: str
    phase: NodePhase
    desired_state: DesiredState
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
        return self.executor.name if self.executor else str(self.executor_id)


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
    level: EventLevel
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


class Page(Generic[T]):
    """One page of a keyset-paginated list."""

    def __init__(self, items: list[T], end_cursor: str | None, has_next_page: bool) -> None:
        self.items = items
        self.end_cursor = end_cursor
        self.has_next_page = has_next_page

    @classmethod
    def from_api(cls, model: type[T], raw: Any) -> "Page[T]":
        """A page of `model` from a connection's {items, pageInfo}; raises AnswerError."""
        body = _object(raw)
        try:
            items = _list_of(model.from_api)(body.get("items"))
        except AnswerError as exc:
            raise exc.inside("items") from None
        try:
            info = PageInfo.from_api(body.get("pageInfo"))
        except AnswerError as exc:
            raise exc.inside("pageInfo") from None
        return cls(items, info.end_cursor, info.has_next_page)
