"""Whether an object needs applying: pure functions, no I/O.

A server-side apply of an unchanged body is a no-op in principle, but the 1.20 API server we
support stamps the apply's time (to the second) into `managedFields`, so a repeated apply bumps
the object's resourceVersion once a second has passed: every resync would "change" every object
(and wake every watcher). So the operator applies only what differs:

- each applied body carries `nodeplane.dev/applied-hash`, a hash of the body itself: a new
  rendering (a changed spec, a field no longer rendered) has a new hash and is applied, so server-
  side apply removes what the operator no longer sets;
- with the same hash, the live object must still hold every field of the body (a child edited by
  hand differs and is applied again, taking its fields back).

Live objects hold more than was applied (defaults, status, other managers' fields): the
comparison is "the body is contained in the live object". Quantities compare by value (the API
server writes them in canonical form: `4831838208` comes back as `4608Mi`).
"""

import copy
import hashlib
import json
from typing import Any

from nodeplane.executor.operator.crd import GROUP
from nodeplane.protocol.quantities import quantity_value

APPLIED_HASH_ANNOTATION = f"{GROUP}/applied-hash"


def body_hash(body: dict[str, Any]) -> str:
    """A short, stable hash of an apply body."""
    encoded = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


def stamped(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its own hash in the `applied-hash` annotation (a copy)."""
    out = copy.deepcopy(body)
    digest = body_hash(body)
    out.setdefault("metadata", {}).setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
    return out


def _same_scalar(want: Any, have: Any) -> bool:
    if want == have and type(want) is type(have):
        return True
    if isinstance(want, str) and isinstance(have, str):
        try:
            return quantity_value(want) == quantity_value(have)
        except ValueError:
            return False
    # JSON has one number type: 1 and 1.0 are the same value.
    both_numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (want, have))
    return both_numbers and want == have


def _named(items: list[Any]) -> dict[str, Any] | None:
    """Items keyed by `name` when every item is a dict with a distinct name, else None."""
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    by_name = {i["name"]: i for i in items}
    return by_name if len(by_name) == len(items) else None


def covers(live: Any, want: Any) -> bool:
    """Whether `live` holds everything of `want` (dicts: a subset; named lists: by name; other
    lists: element by element, same length). An empty map or list that `live` lacks is held:
    the API server drops them (a ConfigMap with no files comes back without `data`)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(
            covers(live[key], value) if key in live else value in ({}, [])
            for key, value in want.items()
        )
    if isinstance(want, list):
        if not isinstance(live, list):
            return False
        wanted, held = _named(want), _named(live)
        if wanted is not None and held is not None and want:
            order = [i["name"] for i in live if i["name"] in wanted]
            return list(wanted) == order and all(
                covers(held[name], item) for name, item in wanted.items()
            )
        return len(live) == len(want) and all(covers(h, w) for h, w in zip(live, want, strict=True))
    return _same_scalar(want, live)


def needs_apply(live: dict[str, Any] | None, body: dict[str, Any]) -> bool:
    """Whether `body` (stamped) must be applied over `live` (None: the object does not exist)."""
    if live is None:
        return True
    want_hash = ((body.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    have_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH_ANNOTATION)
    if want_hash is None or want_hash != have_hash:
        return True
    return not covers(live, body)
