"""Bounds for arbitrary JSON values that get stored: finite numbers, bounded depth and size.

Python's `json` module reads `NaN`, `Infinity` and `1e400` (as inf), and a GraphQL literal such as
`{x: 1e400}` arrives as a float too; none of them is JSON, so PostgreSQL refuses them and SQLite
stores text that no JSON reader can load back. Integers beyond 64 bits are refused for the same
reason in spirit: few readers keep them exact, and Python will not even print one past 4300 digits.
"""

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator

from nodeplane.protocol.text import unstorable_text_problem

MAX_JSON_INTEGER = 2**63 - 1


@dataclass(frozen=True)
class JsonLimits:
    """How big a JSON value may be: nesting, values in all, one string, and its encoded size."""

    max_depth: int = 32
    # The HTTP body limit bounds a whole request already; this bounds one argument the same way
    # for callers that come past it (the web pages call the API in-process).
    max_values: int = 1_000_000
    max_string_length: int = 1_000_000
    max_encoded_bytes: int = 2_000_000


# A runtime event's payload: small, flat-ish details, not a data dump.
PAYLOAD_LIMITS = JsonLimits(
    max_depth=8, max_values=1_000, max_string_length=4_096, max_encoded_bytes=16_384
)


def _scalar_problem(value: object, limits: JsonLimits) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INTEGER:
            return f"integers must lie within ±{MAX_JSON_INTEGER}"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "numbers must be finite (no NaN or Infinity)"
    if isinstance(value, str):
        if len(value) > limits.max_string_length:
            return f"strings must be at most {limits.max_string_length} characters"
        return unstorable_text_problem(value)
    return f"{type(value).__name__} is not a JSON value"


# The most bytes one value of each plain kind takes as JSON (`json.dumps`): a 64-bit integer
# has at most 19 digits and a sign, a float's repr at most 24 characters, `false` 5.
_MAX_INT_BYTES, _MAX_FLOAT_BYTES, _MAX_WORD_BYTES = 20, 24, 5
# An ASCII character takes at most 6 bytes escaped (`\u001f`); a string adds its two quotes.
_MAX_ESCAPED = 6


def _plain_size_bound(value: Any, limits: JsonLimits) -> int | None:
    """An upper bound of the bytes `value` takes as JSON if it is certainly a storable JSON
    value within `limits` but its encoded size; None if it may not be, and the walk below must
    say why.

    Every argument an executor sends passes here (a sync's observations, on every heartbeat),
    and nearly all are plain: ASCII text, 64-bit integers, finite floats. This pass checks those
    by exact type and keeps no paths; anything else (non-ASCII text, a subclass, a problem)
    goes to the walk that names the path. Iterative, as the walk is. The bound spares encoding
    the value to measure it whenever it is within the limit, which it nearly always is.
    """
    if type(value) is not dict and type(value) is not list:
        return None  # a lone scalar: the walk is as quick
    max_depth, max_length = limits.max_depth, limits.max_string_length
    seen = 1
    size = 2
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth >= max_depth:
            return None
        children: Iterable[Any] = item
        if type(item) is dict:
            for key in item:
                if (
                    type(key) is not str
                    or len(key) > max_length
                    or not key.isascii()
                    or "\x00" in key
                ):
                    return None
                size += _MAX_ESCAPED * len(key) + 4  # its quotes and ": "
            children = item.values()
        for child in children:
            seen += 1
            size += 2  # ", "
            kind = type(child)
            if kind is str:
                if len(child) > max_length or not child.isascii() or "\x00" in child:
                    return None
                size += _MAX_ESCAPED * len(child) + 2
            elif kind is int:
                if not -MAX_JSON_INTEGER <= child <= MAX_JSON_INTEGER:
                    return None
                size += _MAX_INT_BYTES
            elif kind is float:
                if not math.isfinite(child):
                    return None
                size += _MAX_FLOAT_BYTES
            elif kind is dict or kind is list:
                size += 2
                pending.append((child, depth + 1))
            elif child is None or kind is bool:
                size += _MAX_WORD_BYTES
            else:
                return None
    return size if seen <= limits.max_values else None


def json_value_problem(value: Any, limits: JsonLimits = JsonLimits()) -> str | None:
    """Why `value` is not a storable JSON value within `limits` (with the path), or None.

    Walks iteratively, so a deeply nested value cannot exhaust the stack.
    """
    bound = _plain_size_bound(value, limits)
    if bound is not None:
        return None if bound <= limits.max_encoded_bytes else _size_problem(value, limits)
    return _walk_problem(value, limits)


def _walk_problem(value: Any, limits: JsonLimits) -> str | None:
    """The full walk of `json_value_problem`, which names the path of the first problem."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    seen = 0
    while pending:
        item, path, depth = pending.pop()
        seen += 1
        if seen > limits.max_values:
            return f"at most {limits.max_values} values in all"
        where = path or "value"
        if isinstance(item, dict | list):
            if depth >= limits.max_depth:
                return f"{where}: nested deeper than {limits.max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return f"{where}: object keys must be strings"
                    if problem := unstorable_text_problem(key):
                        return f"{where}: a key {problem}"
                    if len(key) > limits.max_string_length:
                        return (
                            f"{where}: keys must be at most {limits.max_string_length} characters"
                        )
                    pending.append((child, f"{path}.{key}" if path else key, depth + 1))
            else:
                pending += [(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item)]
        elif problem := _scalar_problem(item, limits):
            return f"{where}: {problem}"
    return _size_problem(value, limits)


def _size_problem(value: Any, limits: JsonLimits) -> str | None:
    if len(json.dumps(value, ensure_ascii=False).encode()) > limits.max_encoded_bytes:
        return f"at most {limits.max_encoded_bytes} bytes as JSON"
    return None


def _payload(value: dict[str, Any]) -> dict[str, Any]:
    if problem := json_value_problem(value, PAYLOAD_LIMITS):
        raise ValueError(problem)
    return value


# The free-form details of an event: any JSON object within PAYLOAD_LIMITS.
JsonPayload = Annotated[dict[str, Any], AfterValidator(_payload)]
