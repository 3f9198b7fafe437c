"""A typed, synchronous client for the control plane's GraphQL API, used by the CLI commands."""

import json
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import msgspec

from nodeplane.cli.errors import ApiError, ConnectionFailed
from nodeplane.cli.http import httpx
from nodeplane.cli.models import (
    ApiKey,
    ApiModel,
    CreatedApiKey,
    Event,
    Executor,
    Incident,
    Invite,
    Me,
    Member,
    MemberAccess,
    Node,
    NodeRow,
    Page,
    RebindResult,
    Revision,
    Session,
)
from nodeplane.protocol import LifecycleAction, NodePhase

# What a list of nodes shows (NodeRow), and a whole node (Node).
NODE_ROW_FIELDS = """
  id name chain network phase desiredState revision observedRevision pendingChange stale
  executorId executor { id name status }
"""
NODE_FIELDS = f"{NODE_ROW_FIELDS} spec observed observedAt deletedAt retainData createdAt updatedAt"
EXECUTOR_FIELDS = "id name kind version status lastSyncAt nodeCount capabilities createdAt"
EVENT_FIELDS = """
  id type level source message actorType actor nodeId nodeName executorId payload createdAt
"""
INCIDENT_FIELDS = """
  id rule severity state subjectKind subjectId subjectName nodeId executorId message value
  threshold details openedAt resolvedAt resolution
"""
REVISION_FIELDS = "nodeId nodeName revision spec author cause createdAt"
KEY_FIELDS = "id name kind prefix enabled executorId expiresAt lastUsedAt createdAt revokedAt"
ME_FIELDS = "email role kind organization { id name }"
MEMBER_FIELDS = "id email role createdAt"
MEMBER_ACCESS_FIELDS = f"member {{ {MEMBER_FIELDS} }} sessionsEnded apiKeysRevoked"

CONNECT_TIMEOUT = 10.0
# A log stream sends a heartbeat every 10 s; silence this long means the connection is gone.
LOG_STREAM_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class LogEvent:
    """One event of a node's log stream: lines (level, text) with the count of lines dropped
    before them, or the end (`ended`, with `code` and `message` when the session failed)."""

    lines: tuple[tuple[str, str], ...] = ()
    dropped: int = 0
    ended: bool = False
    code: str | None = None
    message: str | None = None


def _log_event(name: str, data: str) -> LogEvent | None:
    try:
        body = json.loads(data)
    except ValueError:
        raise ConnectionFailed("unexpected log stream from the control plane") from None
    if not isinstance(body, dict):
        return None
    if name == "lines":
        lines = tuple(
            (str(pair[0]), str(pair[1]))
            for pair in body.get("lines", [])
            if isinstance(pair, list) and len(pair) == 2
        )
        return LogEvent(lines=lines, dropped=int(body.get("dropped") or 0))
    if name == "end":
        code = body.get("code")
        return LogEvent(
            ended=True,
            code=str(code) if code else None,
            message=str(body.get("message") or "") or None,
        )
    return None


A = TypeVar("A", bound=ApiModel)


def normalize_url(url: str) -> str:
    """The control plane's base URL: scheme and host checked, no trailing slash or /graphql."""
    text = url.strip().rstrip("/")
    text = text.removesuffix("/graphql")
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ConnectionFailed(f"invalid control-plane URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConnectionFailed(
            f"invalid control-plane URL {url!r}: expected http://HOST[:PORT] or https://HOST"
        )
    return text


def _in_chain(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def describe_transport_error(url: str, exc: httpx.HTTPError) -> str:
    """A one-line explanation of why `url` could not be reached, with what to check."""
    if _in_chain(exc, ssl.SSLError) or "SSL" in str(exc):
        return (
            f"TLS handshake with {url} failed ({exc}); check http:// versus https:// "
            "and that the server's certificate is trusted"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"{url} did not answer in time; is the control plane running and reachable?"
    if isinstance(exc, httpx.ConnectError):
        return (
            f"could not connect to {url} ({exc}); is the control plane running and the URL right?"
        )
    return f"the connection to {url} failed ({exc or type(exc).__name__})"


class NodeplaneClient:
    """Calls POST /graphql with a bearer token (a session token or an API key)."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        self.url = normalize_url(url)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        # A host that drops packets should fail in seconds, not after the whole read timeout.
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            # A plain-HTTP URL never uses TLS (the client follows no redirects), so it need not
            # load the CA bundle: a third of a short command's time. https:// verifies as ever.
            verify=not self.url.startswith("http://"),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> "NodeplaneClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def call(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `data` of one GraphQL request; raises ApiError or ConnectionFailed."""
        try:
            response = self._http.post(
                "/graphql", json={"query": query, "variables": variables or {}}
            )
        except httpx.HTTPError as exc:
            raise ConnectionFailed(describe_transport_error(self.url, exc)) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or ("data" not in body and "errors" not in body):
            raise ConnectionFailed(self._not_graphql(response.status_code))
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0] if isinstance(errors[0], dict) else {}
            ext = first.get("extensions") or {}
            raise ApiError(
                str(ext.get("code", "unknown")),
                str(first.get("message", "request failed")),
                ext.get("field"),
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise ConnectionFailed(self._not_graphql(response.status_code))
        return data

    def _not_graphql(self, status: int) -> str:
        if status >= 500:
            return (
                f"{self.url} answered HTTP {status}: the control plane, or a proxy in front of "
                "it, failed; try again shortly"
            )
        return (
            f"{self.url}/graphql answered HTTP {status} without a GraphQL response; "
            "is this the URL of a nodeplane control plane?"
        )

    @staticmethod
    def _parse(model: type[A], raw: Any) -> A:
        with _answer_of(model.__name__):
            return model.from_api(raw)

    @staticmethod
    def _parse_all(model: type[A], raw: Any) -> list[A]:
        with _answer_of(f"{model.__name__} list"):
            return msgspec.convert(raw, list[model])  # type: ignore[valid-type]

    # ---- identity -------------------------------------------------------------------------

    def login(self, email: str, password: str, organization_id: UUID | None = None) -> Session:
        """Sign in; the returned token is a bearer token for later calls."""
        data = self.call(
            f"mutation($e: String!, $p: String!, $o: UUID) {{ login(email: $e, password: $p, "
            f"organizationId: $o) {{ token me {{ {ME_FIELDS} }} }} }}",
            {"e": email, "p": password, "o": str(organization_id) if organization_id else None},
        )
        return self._parse(Session, data["login"])

    def me(self) -> Me | None:
        """Who the token belongs to, or None when it is not valid."""
        data = self.call(f"{{ me {{ {ME_FIELDS} }} }}")
        return self._parse(Me, data["me"]) if data.get("me") else None

    # ---- live logs ------------------------------------------------------------------------

    def stream_logs(
        self,
        node_id: UUID,
        *,
        role: str | None = None,
        tail: int | None = None,
        level: str | None = None,
        follow: bool = False,
    ) -> Iterator[LogEvent]:
        """A node's log as it streams (`GET /nodes/{id}/logs/stream`, Server-Sent Events),
        until the stream ends; a refusal raises ApiError with the server's code."""
        params = {"follow": "1" if follow else "0"}
        if role is not None:
            params["role"] = role
        if tail is not None:
            params["tail"] = str(tail)
        if level is not None:
            params["level"] = level
        timeout = httpx.Timeout(LOG_STREAM_READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        try:
            with self._http.stream(
                "GET", f"/nodes/{node_id}/logs/stream", params=params, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._stream_refusal(response)
                yield from self._sse(response)
        except httpx.HTTPError as exc:
            raise ConnectionFailed(describe_transport_error(self.url, exc)) from None

    def _stream_refusal(self, response: httpx.Response) -> Exception:
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        if not isinstance(error, dict) or "code" not in error:
            return ConnectionFailed(self._not_graphql(response.status_code))
        return ApiError(str(error["code"]), str(error.get("message", "")), error.get("field"))

    @staticmethod
    def _sse(response: httpx.Response) -> Iterator[LogEvent]:
        name, data = "message", ""
        for line in response.iter_lines():
            if line == "":
                if data:
                    event = _log_event(name, data)
                    if event is not None:
                        yield event
                        if event.ended:
                            return
                name, data = "message", ""
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()

    # ---- nodes ----------------------------------------------------------------------------

    def all_nodes(self, **filters: Any) -> list[Node]:
        """Every node matching `filters` (as `nodes_page` takes them), whole, all pages."""
        return self._all_pages(Node, NODE_FIELDS, filters)

    def all_node_rows(self, **filters: Any) -> list[NodeRow]:
        """Every node matching `filters` as a list shows it (no spec or observation)."""
        return self._all_pages(NodeRow, NODE_ROW_FIELDS, filters)

    def _all_pages(self, model: type[A], fields: str, filters: dict[str, Any]) -> list[A]:
        found: list[A] = []
        after: str | None = None
        while True:
            page = self.nodes_page(model, fields, after=after, **filters)
            found += page.items
            if not page.has_next_page or page.end_cursor is None:
                return found
            after = page.end_cursor

    def nodes_page(
        self,
        model: type[A],
        fields: str,
        name: str | None = None,
        executor_id: UUID | None = None,
        chain: str | None = None,
        phase: NodePhase | None = None,
        first: int = 200,
        after: str | None = None,
    ) -> "Page[A]":
        """One page of nodes (as `model`, asking for `fields`) by name; `name` matches a
        substring."""
        flt = {
            "name": name,
            "executorId": str(executor_id) if executor_id else None,
            "chain": chain,
            "phase": phase.name if phase else None,
        }
        data = self.call(
            "query($f: NodeFilter, $first: Int!, $after: String) { nodes(filter: $f, "
            f"first: $first, after: $after) {{ items {{ {fields} }} "
            "pageInfo { endCursor hasNextPage } } }",
            {"f": flt, "first": first, "after": after},
        )
        return self._page(model, data["nodes"])

    def node(self, node_id: UUID) -> Node | None:
        """The node, or None if it does not exist or is not visible."""
        data = self.call(
            f"query($id: UUID!) {{ node(id: $id) {{ {NODE_FIELDS} }} }}", {"id": str(node_id)}
        )
        return self._parse(Node, data["node"]) if data.get("node") else None

    def create_node(self, executor_id: UUID, name: str, spec: dict[str, Any]) -> Node:
        """Deploy a node: revision 1 of its spec."""
        data = self.call(
            f"mutation($i: CreateNodeInput!) {{ createNode(input: $i) {{ {NODE_FIELDS} }} }}",
            {"i": {"executorId": str(executor_id), "name": name, "spec": spec}},
        )
        return self._parse(Node, data["createNode"])

    def lifecycle(
        self, node_id: UUID, action: LifecycleAction, expected_revision: int | None = None
    ) -> Node:
        """Start, stop or restart a node (a new revision unless nothing changes)."""
        data = self.call(
            "mutation($id: UUID!, $a: LifecycleAction!, $x: Int) { requestNodeLifecycleAction("
            f"nodeId: $id, action: $a, expectedRevision: $x) {{ {NODE_FIELDS} }} }}",
            {"id": str(node_id), "a": action.name, "x": expected_revision},
        )
        return self._parse(Node, data["requestNodeLifecycleAction"])

    def update_node(
        self, node_id: UUID, changes: dict[str, Any], expected_revision: int | None = None
    ) -> Node:
        """Edit a node (`changes`: clients, overrides, resources, storage or spec) as a new
        revision; no change writes nothing."""
        data = self.call(
            f"mutation($i: UpdateNodeInput!) {{ updateNode(input: $i) {{ {NODE_FIELDS} }} }}",
            {"i": {"nodeId": str(node_id), "expectedRevision": expected_revision, **changes}},
        )
        return self._parse(Node, data["updateNode"])

    def rollback_node(
        self, node_id: UUID, to_revision: int, expected_revision: int | None = None
    ) -> Node:
        """A new revision whose spec is revision `to_revision`'s (desired state kept)."""
        data = self.call(
            "mutation($id: UUID!, $to: Int!, $x: Int) { rollbackNode(nodeId: $id, "
            f"toRevision: $to, expectedRevision: $x) {{ {NODE_FIELDS} }} }}",
            {"id": str(node_id), "to": to_revision, "x": expected_revision},
        )
        return self._parse(Node, data["rollbackNode"])

    def delete_node(self, node_id: UUID, *, retain_data: bool) -> Node:
        """Tombstone a node; its executor tears it down, then it is gone."""
        data = self.call(
            "mutation($id: UUID!, $r: Boolean!) { deleteNode(nodeId: $id, retainData: $r) "
            f"{{ {NODE_FIELDS} }} }}",
            {"id": str(node_id), "r": retain_data},
        )
        return self._parse(Node, data["deleteNode"])

    def revisions(self, node_id: UUID) -> list[Revision]:
        """A node's spec history, oldest first."""
        data = self.call(
            f"query($id: UUID!) {{ nodeRevisions(nodeId: $id) {{ {REVISION_FIELDS} }} }}",
            {"id": str(node_id)},
        )
        return self._parse_all(Revision, data["nodeRevisions"])

    # ---- events, executors, keys ----------------------------------------------------------

    def events(
        self, *, node_id: UUID | None = None, first: int = 50, after: str | None = None
    ) -> "Page[Event]":
        """One page of the events feed, newest first."""
        data = self.call(
            "query($f: EventFilter, $first: Int!, $after: String) { events(filter: $f, "
            f"first: $first, after: $after) {{ items {{ {EVENT_FIELDS} }} "
            "pageInfo { endCursor hasNextPage } } }",
            {"f": {"nodeId": str(node_id) if node_id else None}, "first": first, "after": after},
        )
        return self._page(Event, data["events"])

    def incidents(
        self, *, state: str | None = None, first: int = 50, after: str | None = None
    ) -> "Page[Incident]":
        """One page of alert incidents, newest opened first; `state` OPEN or RESOLVED."""
        data = self.call(
            "query($f: IncidentFilter, $first: Int!, $after: String) { incidents(filter: $f, "
            f"first: $first, after: $after) {{ items {{ {INCIDENT_FIELDS} }} "
            "pageInfo { endCursor hasNextPage } } }",
            {"f": {"state": state}, "first": first, "after": after},
        )
        return self._page(Incident, data["incidents"])

    def executors(self) -> list[Executor]:
        """The organization's executors, by name."""
        data = self.call(f"{{ executors {{ {EXECUTOR_FIELDS} }} }}")
        return self._parse_all(Executor, data["executors"])

    def api_keys(self) -> list[ApiKey]:
        """API keys the caller may see."""
        data = self.call(f"{{ apiKeys {{ {KEY_FIELDS} }} }}")
        return self._parse_all(ApiKey, data["apiKeys"])

    def create_api_key(
        self,
        name: str,
        kind: str,
        expires_at: str | None = None,
        executor_id: UUID | None = None,
    ) -> CreatedApiKey:
        """A new key (`kind` personal or executor); its secret is in the answer only.

        An executor key made with `executor_id` is bound to that existing executor at once.
        """
        data = self.call(
            "mutation($n: String!, $k: ApiKeyKind!, $x: DateTime, $e: UUID) { createApiKey("
            "name: $n, kind: $k, expiresAt: $x, executorId: $e) "
            f"{{ secret apiKey {{ {KEY_FIELDS} }} }} }}",
            {
                "n": name,
                "k": kind.upper(),
                "x": expires_at,
                "e": str(executor_id) if executor_id else None,
            },
        )
        return self._parse(CreatedApiKey, data["createApiKey"])

    def revoke_api_key(self, key_id: UUID) -> ApiKey:
        """Disable a key at once."""
        data = self.call(
            f"mutation($id: UUID!) {{ revokeApiKey(id: $id) {{ {KEY_FIELDS} }} }}",
            {"id": str(key_id)},
        )
        return self._parse(ApiKey, data["revokeApiKey"])

    def rebind_executor(self, executor_id: UUID, key_id: UUID) -> RebindResult:
        """Bind an executor key to the executor; the keys bound to it before are revoked."""
        data = self.call(
            "mutation($e: UUID!, $k: UUID!) { rebindExecutor(executorId: $e, apiKeyId: $k) "
            f"{{ executor {{ {EXECUTOR_FIELDS} }} apiKey {{ {KEY_FIELDS} }} "
            f"revokedKeys {{ {KEY_FIELDS} }} }} }}",
            {"e": str(executor_id), "k": str(key_id)},
        )
        return self._parse(RebindResult, data["rebindExecutor"])

    # ---- members --------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """The organization's members, by email."""
        data = self.call(f"{{ members {{ {MEMBER_FIELDS} }} }}")
        return self._parse_all(Member, data["members"])

    def invite_member(self, email: str, role: str) -> Invite:
        """An invite for `email` with `role`; its token is in the answer only."""
        data = self.call(
            "mutation($e: String!, $r: Role!) { inviteMember(email: $e, role: $r) "
            "{ token email role expiresAt } }",
            {"e": email, "r": role.upper()},
        )
        return self._parse(Invite, data["inviteMember"])

    def remove_member(self, member_id: UUID) -> MemberAccess:
        """Remove a member: their sessions here end and their personal keys are revoked."""
        data = self.call(
            f"mutation($id: UUID!) {{ removeMember(memberId: $id) {{ {MEMBER_ACCESS_FIELDS} }} }}",
            {"id": str(member_id)},
        )
        return self._parse(MemberAccess, data["removeMember"])

    def change_member_role(self, member_id: UUID, role: str) -> Member:
        """Give a member another role (asking for the current one changes nothing)."""
        data = self.call(
            "mutation($id: UUID!, $r: Role!) { changeMemberRole(memberId: $id, role: $r) "
            f"{{ {MEMBER_FIELDS} }} }}",
            {"id": str(member_id), "r": role.upper()},
        )
        return self._parse(Member, data["changeMemberRole"])

    def revoke_sessions(self, member_id: UUID) -> MemberAccess:
        """End a member's sessions here and revoke their personal keys; they stay a member."""
        data = self.call(
            "mutation($id: UUID!) { revokeSessions(memberId: $id) "
            f"{{ {MEMBER_ACCESS_FIELDS} }} }}",
            {"id": str(member_id)},
        )
        return self._parse(MemberAccess, data["revokeSessions"])

    @staticmethod
    def _page(model: type[A], raw: Any) -> "Page[A]":
        with _answer_of(f"{model.__name__} page"):
            return msgspec.convert(raw, Page[model])  # type: ignore[valid-type]


@contextmanager
def _answer_of(what: str) -> Iterator[None]:
    """Reports an answer that does not fit the model (a server of another version) as a typed
    failure, saying where and what, rather than a traceback of msgspec's."""
    try:
        yield
    except msgspec.ValidationError as exc:
        raise ConnectionFailed(
            f"unexpected answer from the control plane ({what}): {_problem(str(exc))}"
        ) from None


def _problem(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.items[0].revision`": the place first, as
    # the API spells it (camelCase), items by index.
    what, found, where = message.rpartition(" - at `$")
    if not found:
        return f"the answer: {message}"
    return f"{where.rstrip('`').lstrip('.') or 'the answer'}: {what}"
