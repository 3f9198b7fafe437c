"""Text every database can store: what a string may hold before it reaches a column or a filter."""

from typing import Annotated

from pydantic import AfterValidator


def unstorable_text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or compared in a text column (NUL, lone surrogate), or None.

    PostgreSQL refuses NUL in text and JSON, and UTF-8 has no encoding for an unpaired surrogate;
    either one reaching a query is a database error instead of an answer.
    """
    if "\x00" in value:
        return "must not contain NUL characters"
    if value.isascii():  # no surrogates, and no copy to find that out
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates"
    return None


def _storable(value: str) -> str:
    if problem := unstorable_text_problem(value):
        raise ValueError(problem)
    return value


# A free-text field (a message, an error text) that still must be storable.
StorableText = Annotated[str, AfterValidator(_storable)]


def storable_excerpt(value: str, max_length: int) -> str:
    """`value` cut to `max_length` with NUL and unpaired surrogates replaced: for text an executor
    passes on from elsewhere (a client's error message), which must not make a report invalid."""
    cleaned = value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned if len(cleaned) <= max_length else cleaned[: max_length - 1] + "…"
