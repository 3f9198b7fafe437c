"""Validation of JSON arguments against protocol models, with typed errors."""

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from nodeplane.controlplane.errors import DomainError, ErrorCode, validation_error

M = TypeVar("M", bound=BaseModel)


def parse_wire(model: type[M], raw: Any, *, field: str) -> M:
    """`raw` as `model`, or `invalid_input` naming each problem."""
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
