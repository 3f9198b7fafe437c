"""What changed between two specs, as a flat list of dotted paths."""

from typing import Any

from pydantic import BaseModel


class SpecChange(BaseModel):
    """One changed leaf: `path` is dotted (e.g. `overrides.args.node`); absent sides are None."""

    path: str
    before: Any = None
    after: Any = None


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        # An empty mapping has no leaves: `{}` → `{"a": 1}` is the one change `a`.
        for key in value:
            _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def spec_diff(before: dict[str, Any], after: dict[str, Any]) -> list[SpecChange]:
    """The leaves that differ between two wire-form specs, sorted by path."""
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    _flatten(before, "", left)
    _flatten(after, "", right)
    return [
        SpecChange(path=path, before=left.get(path), after=right.get(path))
        for path in sorted(left.keys() | right.keys())
        if left.get(path) != right.get(path) or (path in left) != (path in right)
    ]
