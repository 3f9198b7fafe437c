"""Text from the query string and forms, checked before it reaches a query: bounded in length,
and free of what no database stores (NUL, unpaired surrogates)."""

from collections.abc import Iterable, Mapping

from starlette.datastructures import QueryParams

from nodeplane.protocol.text import unstorable_text_problem

# Far longer than any name, chain, event type or cursor the UI deals in, far shorter than what
# breaks a query (SQLite refuses LIKE patterns past 50,000 bytes).
MAX_PARAM_CHARS = 1024

LABELS = {
    "q": "search",
    "chain": "chain",
    "phase": "phase",
    "executor": "executor",
    "sort": "sort",
    "dir": "direction",
    "level": "level",
    "type": "type",
    "node": "node",
    "after": "page cursor",
    "page": "page",
    "per_page": "rows per page",
}


def text_problem(value: str, max_chars: int = MAX_PARAM_CHARS) -> str | None:
    """Why `value` cannot be used as text in a query, or None."""
    if problem := unstorable_text_problem(value):
        return problem
    if len(value) > max_chars:
        return f"must be at most {max_chars} characters"
    return None


def read_params(
    query: QueryParams | Mapping[str, str], names: Iterable[str]
) -> tuple[dict[str, str], list[str]]:
    """Each named parameter stripped ('' when absent or unusable), and what was wrong, if any."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for name in names:
        value = str(query.get(name) or "").strip()
        if problem := text_problem(value):
            problems.append(f"{LABELS.get(name, name)}: {problem}")
            value = ""
        values[name] = value
    return values, problems


def page_number(value: str) -> tuple[int, str | None]:
    """A 1-based page number from `value` ('' is 1), and what was wrong with it, if anything
    (a page past the last is not wrong: the page shows the last)."""
    if not value:
        return 1, None
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        return 1, f"{LABELS['page']}: must be a whole number from 1"
    return int(value), None


def page_size(value: str, allowed: tuple[int, ...], default: int) -> tuple[int, str | None]:
    """A page size among `allowed` from `value` ('' is `default`), and what was wrong with it."""
    if not value:
        return default, None
    for size in allowed:
        if value == str(size):
            return size, None
    return default, f"{LABELS['per_page']}: must be one of {', '.join(map(str, allowed))}"
