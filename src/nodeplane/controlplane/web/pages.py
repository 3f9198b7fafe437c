"""The UI's pages: each handler queries the GraphQL API in-process and renders a template; the
nodes page alone reads its rows and executors from the service layer the API's resolvers call
(node_rows, executor_choices), in the API's shape: through the GraphQL executor a page of 1,000
nodes cost ~0.6 s of CPU, three quarters of it resolving ~20,000 fields one by one."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from nodeplane.controlplane.auth.principal import Principal
from nodeplane.controlplane.config import Settings
from nodeplane.controlplane.errors import DomainError, ErrorCode
from nodeplane.controlplane.services import executors as executor_service
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.web.params import read_params
from nodeplane.controlplane.web.session import PageQuery, current_user
from nodeplane.controlplane.web.templating import templates
from nodeplane.protocol import DesiredState, NodePhase, derive_node_phase

PHASES = [p.value for p in NodePhase]
# The nodes page shows at most this many rows (five of the API's pages of 200).
MAX_NODE_ROWS = 1000
SORT_KEYS = ("name", "chain", "phase", "executor", "updated")

NODE_FIELDS = """id name chain network phase desiredState revision observedRevision pendingChange
stale observed observedAt deletedAt updatedAt executorId executor { id name status }"""

NODES = f"""query($filter: NodeFilter, $after: String) {{
  nodes(filter: $filter, first: 200, after: $after) {{
    items {{ {NODE_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }} }}"""
EXECUTORS = """{ executors { id name kind version status lastSyncAt capabilities nodeCount } }"""
NODE = f"""query($id: UUID!) {{ node(id: $id) {{ {NODE_FIELDS} spec retainData createdAt }}
  nodeRevisions(nodeId: $id) {{ revision author cause createdAt }}
  events(filter: {{nodeId: $id}}, first: 25) {{
    items {{ id type level message actor createdAt }} }} }}"""
EVENTS = """query($filter: EventFilter, $after: String) {
  events(filter: $filter, first: 50, after: $after) {
    items { id type level source message actor nodeId nodeName createdAt }
    pageInfo { endCursor hasNextPage } } }"""
API_KEYS = """{ apiKeys { id name kind prefix enabled executorId expiresAt lastUsedAt createdAt
  revokedAt } }"""

Handler = Callable[[Request], Awaitable[Response]]
PageHandler = Callable[[Request, PageQuery, Principal], Awaitable[Response]]

_STATUS = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
}


def status_for(error: DomainError) -> int:
    """The HTTP status of a page that could not show what was asked because of `error`."""
    return _STATUS.get(error.code, 400)


def _chain_capabilities(executor: dict[str, Any]) -> list[dict[str, Any]]:
    """The executor's declared chains; a row of another shape (stored by an older version)
    declares none rather than breaking the page."""
    capabilities = executor.get("capabilities")
    chains = capabilities.get("chains") if isinstance(capabilities, dict) else None
    if not isinstance(chains, list):
        return []
    return [c for c in chains if isinstance(c, dict) and isinstance(c.get("chain"), str)]


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _chains_of(executors: list[dict[str, Any]]) -> list[str]:
    return sorted({c["chain"] for e in executors for c in _chain_capabilities(e)})


def uuid_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def node_row(row: models.Node, executor: models.Executor | None, online: bool) -> dict[str, Any]:
    """`row` in the shape the API returns for NODE_FIELDS (the templates and the sort read it),
    derived as Node.from_row derives it but validating the observation once, not twice, and
    without building the API object (together a fifth of a 1,000-node page's CPU)."""
    observed = node_service.observed_of(row)
    observed_revision = observed.revision if observed else None
    desired = DesiredState(row.spec.get("desiredState", DesiredState.RUNNING))
    phase = derive_node_phase(
        desired_state=desired,
        revision=row.revision,
        deleted=row.deleted_at is not None,
        observed=observed,
    )
    return {
        "id": str(row.id),
        "name": row.name,
        "chain": row.chain,
        "network": row.network,
        "phase": phase.name,
        "desiredState": desired.name,
        "revision": row.revision,
        "observedRevision": observed_revision,
        "pendingChange": observed_revision is None or observed_revision < row.revision,
        "stale": not online,
        "observed": row.observed,
        "observedAt": _iso(row.observed_at),
        "deletedAt": _iso(row.deleted_at),
        "updatedAt": _iso(row.updated_at),
        "executorId": str(row.executor_id),
        "executor": (
            {
                "id": str(executor.id),
                "name": executor.name,
                "status": "ONLINE" if online else "OFFLINE",
            }
            if executor is not None
            else None
        ),
    }


def _attributes(row: dict[str, Any]) -> SimpleNamespace:
    """`row` with its keys as attributes, for the template: Jinja looks `n.name` up with getattr
    first and tries `n["name"]` only after an AttributeError, so on a dict each of a row's ~15
    lookups raised one (a quarter of a 1,000-row page's template time)."""
    executor = row["executor"]
    return SimpleNamespace(
        **{**row, "executor": SimpleNamespace(**executor) if executor is not None else None}
    )


async def executor_choices(db: Database, principal: Principal) -> list[dict[str, Any]]:
    """The executors `principal` may see, by name, as the API's `executors { id name
    capabilities }` returns them: what the nodes page's filters offer."""
    async with db.read() as session:
        rows = await executor_service.list_executors(session, principal)
    return [{"id": str(e.id), "name": e.name, "capabilities": e.capabilities} for e in rows]


async def node_rows(
    db: Database,
    settings: Settings,
    principal: Principal,
    flt: node_service.NodeFilter,
    limit: int = MAX_NODE_ROWS,
) -> list[dict[str, Any]]:
    """The first `limit` nodes `principal` may see through `flt`, by name, each as the API's
    `nodes { items { NODE_FIELDS } }` returns it, from the service calls its resolvers make, in
    one read session."""
    rows: list[models.Node] = []
    async with db.read() as session:
        after = None
        while len(rows) < limit:
            page = await node_service.list_nodes(
                session,
                principal,
                flt,
                first=min(node_service.MAX_PAGE, limit - len(rows)),
                after=after,
            )
            rows += page.items
            if not page.has_next_page:
                break
            after = page.end_cursor
        executors = await executor_service.get_executors(
            session, principal, list({r.executor_id for r in rows})
        )
    timeout = settings.heartbeat_timeout
    online = {e.id: executor_service.is_online(e, timeout) for e in executors.values()}
    return [
        node_row(r, executors.get(r.executor_id), online.get(r.executor_id, False)) for r in rows
    ]


class Pages:
    """The page handlers, bound to the database and settings of the app."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def page(self, handler: PageHandler) -> Handler:
        """Wrap a handler: redirect to sign-in without a session, else run it with a query; a
        typed error it does not handle itself becomes an error page with its message."""

        async def wrapped(request: Request) -> Response:
            principal = await current_user(self.db, request)
            if principal is None:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse("/signin?" + urlencode({"next": target}), status_code=303)
            query = PageQuery(self.db, self.settings, principal, request)
            try:
                return await handler(request, query, principal)
            except DomainError as exc:
                return self.render(
                    request,
                    "error.html",
                    principal,
                    status_code=status_for(exc),
                    message=exc.message,
                    active="",
                )

        return wrapped

    def render(
        self,
        request: Request,
        name: str,
        principal: Principal,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        context.setdefault("active", name.removesuffix(".html"))
        return templates.TemplateResponse(
            request,
            name,
            {"user": principal.label, "can_mutate": principal.can_mutate, **context},
            status_code=status_code,
        )

    async def nodes(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        params, problems = read_params(
            request.query_params, ("q", "chain", "phase", "executor", "sort", "dir")
        )
        search = params["q"]
        chain = params["chain"] or None
        phase = params["phase"] if params["phase"] in PHASES else None
        executor_id = uuid_or_none(params["executor"])
        sort = params["sort"] if params["sort"] in SORT_KEYS else "name"
        descending = params["dir"] == "desc"
        flt = {
            "name": search or None,
            "chain": chain,
            "phase": phase.upper() if phase else None,
            "executorId": executor_id,
        }
        # Bad filters get the page back with the message and the form, and no rows.
        error = "; ".join(problems) or None
        status = 400 if problems else 200
        items: list[dict[str, Any]] = []
        if error is None:
            try:
                items = await node_rows(
                    self.db,
                    self.settings,
                    principal,
                    node_service.NodeFilter(
                        name=search or None,
                        chain=chain,
                        phase=NodePhase(phase) if phase else None,
                        executor_id=UUID(executor_id) if executor_id else None,
                    ),
                )
            except DomainError as exc:
                error, status = exc.message, status_for(exc)
        sort_key: dict[str, Callable[[dict[str, Any]], Any]] = {
            "name": lambda n: n["name"],
            "chain": lambda n: (n["chain"], n["network"], n["name"]),
            "phase": lambda n: (PHASES.index(n["phase"].lower()), n["name"]),
            "executor": lambda n: ((n["executor"] or {}).get("name", ""), n["name"]),
            "updated": lambda n: n["updatedAt"],
        }
        items.sort(key=sort_key[sort], reverse=descending)
        executors = await executor_choices(self.db, principal)
        executor_names = {e["id"]: e["name"] for e in executors}
        current = {
            k: v
            for k, v in {
                "q": search,
                "chain": chain or "",
                "phase": phase or "",
                "executor": executor_id or "",
                "sort": sort if sort != "name" else "",
                "dir": "desc" if descending else "",
            }.items()
            if v
        }

        def url_with(**changes: str | None) -> str:
            merged = {**current, **changes}
            kept = {k: v for k, v in merged.items() if v}
            return "/nodes" + ("?" + urlencode(kept) if kept else "")

        def sort_url(key: str) -> str:
            flip = "desc" if sort == key and not descending else None
            return url_with(sort=key if key != "name" else None, dir=flip)

        chips = []
        if chain:
            chips.append(("chain", chain, url_with(chain=None)))
        if phase:
            chips.append(("phase", phase, url_with(phase=None)))
        if executor_id:
            name = executor_names.get(executor_id, executor_id)
            chips.append(("executor", name, url_with(executor=None)))
        return self.render(
            request,
            "nodes.html",
            principal,
            status_code=status,
            nodes=[_attributes(n) for n in items],
            search=search,
            chain=chain,
            phase=phase,
            executor_id=executor_id,
            chips=chips,
            chains=_chains_of(executors),
            phases=PHASES,
            executors=executors,
            sort=sort,
            descending=descending,
            sort_url=sort_url,
            node_filter=flt,
            error=error,
        )

    async def node(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        node_id = uuid_or_none(request.path_params["node_id"])
        data: dict[str, Any] = (await query(NODE, {"id": node_id})) if node_id else {"node": None}
        if data["node"] is None:
            return self.render(
                request, "not_found.html", principal, what="Node", active="nodes", status_code=404
            )
        return self.render(
            request,
            "node.html",
            principal,
            node=data["node"],
            revisions=sorted(data["nodeRevisions"], key=lambda r: -r["revision"]),
            events=data["events"]["items"],
            active="nodes",
        )

    async def deploy(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        executors = (await query(EXECUTORS))["executors"]
        return self.render(
            request,
            "deploy.html",
            principal,
            executors=executors,
            # Read by app.js from a JSON script element; the template escapes it with |tojson.
            executors_data=[
                {
                    "id": e["id"],
                    "name": e["name"],
                    "status": e["status"],
                    "capabilities": e["capabilities"],
                }
                for e in executors
            ],
            active="nodes",
        )

    async def executors(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        executors = (await query(EXECUTORS))["executors"]
        for e in executors:
            e["summary"] = [
                {
                    "chain": c["chain"],
                    "networks": _strings(c.get("networks")),
                    "clients": sorted(
                        {
                            cl["name"]
                            for r in c.get("roles") or []
                            if isinstance(r, dict)
                            for cl in r.get("clients") or []
                            if isinstance(cl, dict) and isinstance(cl.get("name"), str)
                        }
                    ),
                }
                for c in _chain_capabilities(e)
            ]
        return self.render(
            request,
            "executors.html",
            principal,
            executors=executors,
            server_url=str(request.base_url).rstrip("/"),
        )

    async def api_keys(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        keys = (await query(API_KEYS))["apiKeys"]
        return self.render(request, "keys.html", principal, keys=keys)

    async def events(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        params, problems = read_params(request.query_params, ("level", "type", "node", "after"))
        level = params["level"] if params["level"] in ("info", "warn", "error") else None
        event_type = params["type"] or None
        node_id = uuid_or_none(params["node"])
        after = params["after"] or None
        flt = {"level": level.upper() if level else None, "type": event_type, "nodeId": node_id}
        error = "; ".join(problems) or None
        status = 400 if problems else 200
        page: dict[str, Any] = {"items": [], "pageInfo": {"endCursor": None, "hasNextPage": False}}
        if error is None:
            try:
                page = (await query(EVENTS, {"filter": flt, "after": after}))["events"]
            except DomainError as exc:
                error, status = exc.message, status_for(exc)
        nodes = (await query(NODES, {"filter": {}, "after": None}))["nodes"]["items"]
        base = {k: v for k, v in {"level": level, "type": event_type, "node": node_id}.items() if v}
        older = (
            "/events?" + urlencode({**base, "after": page["pageInfo"]["endCursor"]})
            if page["pageInfo"]["hasNextPage"]
            else None
        )
        return self.render(
            request,
            "events.html",
            principal,
            status_code=status,
            events=page["items"],
            level=level,
            event_type=event_type or "",
            node_id=node_id,
            nodes=nodes,
            older=older,
            newest="/events" + ("?" + urlencode(base) if base else ""),
            paged=after is not None,
            error=error,
        )
