"""Find nodes, executors, keys and members by the name, email or id a user typed."""

from typing import TYPE_CHECKING
from uuid import UUID

from nodeplane.cli.common import fail
from nodeplane.cli.errors import ApiError
from nodeplane.cli.models import ApiKey, Executor, Member, Node

if TYPE_CHECKING:  # a client is passed in; importing it here would load httpx for `--help`
    from nodeplane.cli.client import NodeplaneClient


def as_uuid(text: str) -> UUID | None:
    """`text` as a UUID, or None when it is a name."""
    try:
        return UUID(text)
    except ValueError:
        return None


def find_executor(client: "NodeplaneClient", ref: str) -> Executor:
    """The executor named or identified by `ref`."""
    executors = client.executors()
    ref_id = as_uuid(ref)
    for e in executors:
        if e.id == ref_id or e.name == ref:
            return e
    known = ", ".join(e.name for e in executors) or "none yet"
    raise ApiError("not_found", f"executor {ref!r} not found (executors: {known})")


def default_executor(client: "NodeplaneClient") -> Executor:
    """The organization's only executor; with several, the user must choose."""
    executors = client.executors()
    if len(executors) == 1:
        return executors[0]
    if not executors:
        raise ApiError("not_found", "no executor has connected yet: install and start an agent")
    names = ", ".join(e.name for e in executors)
    fail(f"several executors ({names}): choose one with --executor NAME")


def find_node(client: "NodeplaneClient", ref: str, executor_ref: str | None = None) -> Node:
    """The node named or identified by `ref`, optionally on one executor.

    Names are unique per executor only, so a name used on several executors needs `--executor`.
    """
    executor = find_executor(client, executor_ref) if executor_ref else None
    ref_id = as_uuid(ref)
    if ref_id is not None:
        node = client.node(ref_id)
        if node is not None and (executor is None or node.executor_id == executor.id):
            return node
    # The API's name filter matches substrings; only an exact match names a node.
    candidates = client.all_nodes(name=ref, executor_id=executor.id if executor else None)
    matches = [n for n in candidates if n.name == ref]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        where = f" on executor {executor.name!r}" if executor else ""
        raise ApiError("not_found", f"node {ref!r} not found{where}")
    names = ", ".join(sorted(n.executor_name for n in matches))
    fail(
        f"node name {ref!r} is used on {len(matches)} executors ({names}): "
        "choose one with --executor NAME"
    )


def node_id_for_history(client: "NodeplaneClient", ref: str, executor_ref: str | None) -> UUID:
    """A node id for reading history: an id is used as is, since history outlives the node."""
    ref_id = as_uuid(ref)
    if ref_id is not None and executor_ref is None:
        return ref_id
    return find_node(client, ref, executor_ref).id


def find_key(client: "NodeplaneClient", ref: str) -> ApiKey:
    """The API key identified by `ref` (an id, or the name of exactly one active key)."""
    keys = client.api_keys()
    ref_id = as_uuid(ref)
    by_id = [k for k in keys if k.id == ref_id]
    if by_id:
        return by_id[0]
    named = [k for k in keys if k.name == ref and k.enabled]
    if len(named) == 1:
        return named[0]
    if not named:
        raise ApiError("not_found", f"API key {ref!r} not found")
    fail(f"{len(named)} active keys are named {ref!r}: revoke by id (see `nodeplane keys list`)")


def key_id(client: "NodeplaneClient", ref: str) -> UUID:
    """The id of the key `ref` names; an id goes to the API as is, which says if it is unknown.

    Members see only their own keys in `apiKeys`, so looking an id up there would answer
    `not_found` where the API answers what is true: `forbidden`.
    """
    return as_uuid(ref) or find_key(client, ref).id


def find_member(client: "NodeplaneClient", ref: str) -> Member:
    """The member of the caller's organization with the email or member id `ref`."""
    ref_id = as_uuid(ref)
    # The API stores emails trimmed and lower-cased; match what the user typed the same way.
    email = ref.strip().lower()
    for m in client.members():
        if m.id == ref_id or m.email == email:
            return m
    raise ApiError("not_found", f"member {ref!r} not found")
