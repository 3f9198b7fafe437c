"""Text a caller puts into a query filter: checked before it reaches the database.

The web pages call the API in-process, past the HTTP body guard's NUL check, so a NUL typed
into a search box would otherwise reach PostgreSQL as a database error (an HTTP 500).
"""

from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.protocol import unstorable_text_problem

MAX_FILTER_TEXT = 128  # no name, chain or event type is longer


def check_filter_text(*fields: tuple[str, str | None]) -> None:
    """`invalid_input` for the first (field, text) no database can compare, or that is too long."""
    for field, value in fields:
        if value is None:
            continue
        problem = unstorable_text_problem(value)
        if problem is None and len(value) > MAX_FILTER_TEXT:
            problem = f"must be at most {MAX_FILTER_TEXT} characters"
        if problem:
            raise DomainError(ErrorCode.INVALID_INPUT, f"{field} {problem}", field=field)
