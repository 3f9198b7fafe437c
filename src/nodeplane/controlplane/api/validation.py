"""Validation of JSON and datetime arguments against protocol rules, with typed errors."""

from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nodeplane.controlplane.errors import DomainError, ErrorCode, validation_error
from nodeplane.protocol import datetime_problem, json_value_problem

M = TypeVar("M", bound=BaseModel)


def check_json(raw: Any, *, field: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> None:
    """Refuse a JSON argument that could not be stored: NaN, Infinity, huge integers, NUL or
    unpaired surrogates, or nesting and size past the limits."""
    if problem := json_value_problem(raw):
        raise DomainError(code, f"invalid {field}: {problem}", field=field)


def parse_wire(model: type[M], raw: Any, *, field: str) -> M:
    """`raw` as `model`, or `invalid_input` naming each problem."""
    check_json(raw, field=field)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, ErrorCode.INVALID_INPUT, field) from None


def json_list(raw: Any, field: str, *, max_items: int = 1000) -> list[Any]:
    """`raw` if it is a JSON list of at most `max_items`, else `invalid_input`."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DomainError(ErrorCode.INVALID_INPUT, f"{field} must be a list", field=field)
    if len(raw) > max_items:
        raise DomainError(
            ErrorCode.INVALID_INPUT, f"{field}: at most {max_items} items", field=field
        )
    return raw


def datetime_input(value: datetime | None, *, field: str) -> datetime | None:
    """A datetime argument, or `invalid_input` when it has no time zone or lies out of range.

    Every DateTime argument of a mutation passes through here before anything computes with it
    (tests/controlplane/test_input_bounds.py checks the schema for ones that do not).
    """
    if value is not None and (problem := datetime_problem(value)):
        raise DomainError(ErrorCode.INVALID_INPUT, f"{field} {problem}", field=field)
    return value
