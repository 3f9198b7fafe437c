"""The UI's pages: each handler queries the GraphQL API in-process and renders a template; the
nodes page alone reads its rows and executors from the service layer (node_rows,
executor_choices), in the API's shape: through the GraphQL executor a page of 1,000 nodes cost
~0.6 s of CPU, three quarters of it resolving ~20,000 fields one by one. Its rows come a numbered
page at a time (PAGE_SIZES), in the columns the page shows only."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
from nodeplane.controlplane.services import alerts as alert_service
from nodeplane.controlplane.services import executors as executor_service
from nodeplane.controlplane.services import nodes as node_service
from nodeplane.controlplane.store import models
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.web.params import page_number, page_size, read_params
from nodeplane.controlplane.web.session import PageQuery, current_user
from nodeplane.controlplane.web.templating import templates
from nodeplane.protocol import NodePhase

PHASES = [p.value for p in NodePhase]
SORT_KEYS = node_service.NODE_SORTS
# The nodes page's rows per page: a few fixed sizes, as fleet consoles offer, the largest the
# service's bound. A 1,000-row page cost ~190 CPU ms on a slow machine; 100 rows about a tenth.
PAGE_SIZES = (50, 100, 200, 500)
DEFAULT_PAGE_SIZE = 100

NODE_FIELDS = """id name chain network phase desiredState revision observedRevision pendingChange
stale observed observedAt deletedAt updatedAt executorId executor { id name status }"""

NODES = f"""query($filter: NodeFilter, $after: String) {{
  nodes(filter: $filter, first: 200, after: $after) {{
    items {{ {NODE_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }} }}"""
EXECUTORS = """{ executors { id name kind version status lastSyncAt capabilities nodeCount } }"""
NODE = f"""query($id: UUID!) {{ node(id: $id) {{ {NODE_FIELDS} spec retainData createdAt
    executor {{ id name status capabilities }} }}
  nodeRevisions(nodeId: $id) {{ revision author cause createdAt }}
  events(filter: {{nodeId: $id}}, first: 25) {{
    items {{ id type level message actor createdAt }} }} }}"""
EVENTS = """query($filter: EventFilter, $after: String) {
  events(filter: $filter, first: 50, after: $after) {
    items { id type level source message actor nodeId nodeName createdAt }
    pageInfo { endCursor hasNextPage } } }"""
INCIDENT_FIELDS = """id rule severity state subjectKind subjectId subjectName nodeId executorId
message value threshold openedAt resolvedAt resolution"""
INCIDENTS = f"""query($filter: IncidentFilter, $after: String) {{
  incidents(filter: $filter, first: 50, after: $after) {{
    items {{ {INCIDENT_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }}
  openIncidentCount }}"""
ALERT_SETTING_FIELDS = """rule enabled threshold defaultThreshold thresholdMeaning orgEnabled
orgThreshold nodeEnabled nodeThreshold"""
ALERT_SETTINGS = f"{{ alertSettings {{ {ALERT_SETTING_FIELDS} }} }}"
NODE_ALERTS = f"""query($id: UUID!) {{ alertSettings(nodeId: $id) {{ {ALERT_SETTING_FIELDS} }}
  incidents(filter: {{nodeId: $id}}, first: 10) {{ items {{ {INCIDENT_FIELDS} }} }} }}"""
# The bell in the top bar: how many incidents are open, and the latest few.
BELL_SIZE = 5
API_KEYS = """{ apiKeys { id name kind prefix enabled executorId expiresAt lastUsedAt createdAt
  revokedAt } }"""

WEBHOOK_ENDPOINTS = """{ webhookEventTypes
  webhookEndpoints { id url description enabled eventTypes secretPrefix createdAt } }"""
WEBHOOK_DELIVERIES = """query($endpoint: UUID, $after: String) {
  webhookEndpoints { id url }
  webhookDeliveries(endpointId: $endpoint, first: 25, after: $after) {
    items { id endpointId eventType status series attemptCount nextAttemptAt lastStatusCode
      lastError createdAt completedAt
      attempts { series number startedAt durationMs statusCode responseExcerpt error succeeded } }
    pageInfo { endCursor hasNextPage } } }"""

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


def client_versions(node: dict[str, Any]) -> dict[str, list[str]]:
    """Per role of the node, the versions its executor declares of the role's current client:
    what the Edit dialog offers."""
    executor = node.get("executor") or {}
    spec = node.get("spec") or {}
    chain = next(
        (c for c in _chain_capabilities(executor) if c.get("chain") == spec.get("chain")), {}
    )
    offered: dict[str, list[str]] = {}
    for role, selection in (spec.get("clients") or {}).items():
        role_cap: dict[str, Any] = next(
            (r for r in chain.get("roles") or [] if r.get("role") == role), {}
        )
        client: dict[str, Any] = next(
            (c for c in role_cap.get("clients") or [] if c.get("name") == selection.get("name")),
            {},
        )
        offered[role] = _strings(client.get("versions"))
    return offered


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


def node_row(
    listing: node_service.NodeListing, executor: models.Executor | None, online: bool
) -> dict[str, Any]:
    """`listing` in the shape the API returns for NODE_FIELDS (the templates and the live rows
    read it), derived as Node.from_row derives it but validating the observation once, not
    twice, and without building the API object (together a fifth of a 1,000-node page's CPU)."""
    observed = listing.observation()
    observed_revision = observed.revision if observed else None
    return {
        "id": str(listing.id),
        "name": listing.name,
        "chain": listing.chain,
        "network": listing.network,
        "phase": listing.phase(observed).name,
        "desiredState": listing.desired_state.name,
        "revision": listing.revision,
        "observedRevision": observed_revision,
        "pendingChange": observed_revision is None or observed_revision < listing.revision,
        "stale": not online,
        "observed": listing.observed,
        "observedAt": _iso(listing.observed_at),
        "deletedAt": _iso(listing.deleted_at),
        "updatedAt": _iso(listing.updated_at),
        "executorId": str(listing.executor_id),
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


@dataclass(frozen=True)
class NodeRows:
    """One page of the nodes page's rows, how many nodes match, and which page it is."""

    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def first(self) -> int:
        """The 1-based number of the page's first row (0 when there is none)."""
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self) -> int:
        return (self.page - 1) * self.per_page + len(self.items)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


async def node_rows(
    db: Database,
    settings: Settings,
    principal: Principal,
    flt: node_service.NodeFilter,
    *,
    sort: node_service.NodeSort = "name",
    descending: bool = False,
    page: int = 1,
    per_page: int = DEFAULT_PAGE_SIZE,
) -> NodeRows:
    """Page `page` of the nodes `principal` may see through `flt`, each row as the API's
    `nodes { items { NODE_FIELDS } }` returns it, in one read session."""
    async with db.read() as session:
        listed = await node_service.list_node_listings(
            session, principal, flt, sort=sort, descending=descending, page=page, per_page=per_page
        )
        executors = await executor_service.get_executors(
            session, principal, list({n.executor_id for n in listed.items})
        )
    timeout = settings.heartbeat_timeout
    online = {e.id: executor_service.is_online(e, timeout) for e in executors.values()}
    items = [
        node_row(n, executors.get(n.executor_id), online.get(n.executor_id, False))
        for n in listed.items
    ]
    return NodeRows(items, listed.total, listed.page, listed.per_page)


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
            request.state.bell = await self.bell(principal)
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

    async def bell(self, principal: Principal) -> dict[str, Any]:
        """The top bar's bell: the open count and the latest open incidents (app.js keeps
        it current between page loads)."""
        async with self.db.read() as session:
            count = await alert_service.count_open(session, principal)
            latest = (
                await alert_service.list_incidents(
                    session, principal, alert_service.IncidentFilter(state="open"), first=BELL_SIZE
                )
            ).items
        return {
            "count": count,
            "latest": [
                {
                    "id": str(i.id),
                    "rule": i.rule,
                    "severity": i.severity,
                    "subject": i.subject_name,
                    "href": f"/nodes/{i.node_id}" if i.node_id else "/executors",
                    "openedAt": i.opened_at.isoformat(),
                }
                for i in latest
            ],
        }

    def render(
        self,
        request: Request,
        name: str,
        principal: Principal,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        context.setdefault("active", name.removesuffix(".html"))
        bell = getattr(request.state, "bell", None)
        return templates.TemplateResponse(
            request,
            name,
            {"user": principal.label, "can_mutate": principal.can_mutate, "bell": bell, **context},
            status_code=status_code,
        )

    async def nodes(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        params, problems = read_params(
            request.query_params,
            ("q", "chain", "phase", "executor", "sort", "dir", "page", "per_page"),
        )
        search = params["q"]
        chain = params["chain"] or None
        phase = params["phase"] if params["phase"] in PHASES else None
        executor_id = uuid_or_none(params["executor"])
        sort: node_service.NodeSort = next((k for k in SORT_KEYS if k == params["sort"]), "name")
        descending = params["dir"] == "desc"
        page, page_problem = page_number(params["page"])
        per_page, size_problem = page_size(params["per_page"], PAGE_SIZES, DEFAULT_PAGE_SIZE)
        problems += [p for p in (page_problem, size_problem) if p]
        flt = {
            "name": search or None,
            "chain": chain,
            "phase": phase.upper() if phase else None,
            "executorId": executor_id,
        }
        # Bad filters get the page back with the message and the form, and no rows.
        error = "; ".join(problems) or None
        status = 400 if problems else 200
        rows = NodeRows([], 0, 1, per_page)
        if error is None:
            try:
                rows = await node_rows(
                    self.db,
                    self.settings,
                    principal,
                    node_service.NodeFilter(
                        name=search or None,
                        chain=chain,
                        phase=NodePhase(phase) if phase else None,
                        executor_id=UUID(executor_id) if executor_id else None,
                    ),
                    sort=sort,
                    descending=descending,
                    page=page,
                    per_page=per_page,
                )
            except DomainError as exc:
                error, status = exc.message, status_for(exc)
        executors = await executor_choices(self.db, principal)
        executor_names = {e["id"]: e["name"] for e in executors}
        # What the page shows besides its page number: every link keeps it; the page number is
        # kept only by the links that move between pages (a new filter or sort starts at 1).
        current = {
            k: v
            for k, v in {
                "q": search,
                "chain": chain or "",
                "phase": phase or "",
                "executor": executor_id or "",
                "sort": sort if sort != "name" else "",
                "dir": "desc" if descending else "",
                "per_page": str(per_page) if per_page != DEFAULT_PAGE_SIZE else "",
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

        def page_url(number: int) -> str:
            return url_with(page=str(number) if number > 1 else None)

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
            nodes=[_attributes(n) for n in rows.items],
            rows=rows,
            previous_url=page_url(rows.page - 1) if rows.page > 1 else None,
            next_url=page_url(rows.page + 1) if rows.page < rows.pages else None,
            default_page_size=DEFAULT_PAGE_SIZE,
            page_sizes=[
                (size, url_with(per_page=str(size) if size != DEFAULT_PAGE_SIZE else None))
                for size in PAGE_SIZES
            ],
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
        alerts = await query(NODE_ALERTS, {"id": node_id})
        return self.render(
            request,
            "node.html",
            principal,
            alert_settings=alerts["alertSettings"] or [],
            incidents=alerts["incidents"]["items"],
            node=data["node"],
            client_versions=client_versions(data["node"]),
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

    async def incidents(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        params, problems = read_params(request.query_params, ("state", "after"))
        state = params["state"] if params["state"] in ("open", "resolved") else None
        after = params["after"] or None
        error = "; ".join(problems) or None
        status = 400 if problems else 200
        page: dict[str, Any] = {"items": [], "pageInfo": {"endCursor": None, "hasNextPage": False}}
        open_count = 0
        if error is None:
            try:
                data = await query(
                    INCIDENTS,
                    {"filter": {"state": state.upper() if state else None}, "after": after},
                )
                page, open_count = data["incidents"], data["openIncidentCount"]
            except DomainError as exc:
                error, status = exc.message, status_for(exc)
        base = {"state": state} if state else {}
        older = (
            "/incidents?" + urlencode({**base, "after": page["pageInfo"]["endCursor"]})
            if page["pageInfo"]["hasNextPage"]
            else None
        )
        return self.render(
            request,
            "incidents.html",
            principal,
            status_code=status,
            incidents=page["items"],
            state=state,
            open_count=open_count,
            older=older,
            newest="/incidents" + ("?" + urlencode(base) if base else ""),
            paged=after is not None,
            error=error,
        )

    async def alert_settings(
        self, request: Request, query: PageQuery, principal: Principal
    ) -> Response:
        rows = (await query(ALERT_SETTINGS))["alertSettings"]
        return self.render(
            request, "alert_settings.html", principal, settings=rows, active="incidents"
        )

    async def webhooks(self, request: Request, query: PageQuery, principal: Principal) -> Response:
        data = await query(WEBHOOK_ENDPOINTS)
        return self.render(
            request,
            "webhooks.html",
            principal,
            endpoints=data["webhookEndpoints"],
            event_types=data["webhookEventTypes"],
        )

    async def webhook_deliveries(
        self, request: Request, query: PageQuery, principal: Principal
    ) -> Response:
        params, problems = read_params(request.query_params, ("endpoint", "after"))
        endpoint_id = uuid_or_none(params["endpoint"])
        after = params["after"] or None
        error = "; ".join(problems) or None
        status = 400 if problems else 200
        data: dict[str, Any] = {
            "webhookEndpoints": [],
            "webhookDeliveries": {
                "items": [],
                "pageInfo": {"endCursor": None, "hasNextPage": False},
            },
        }
        if error is None:
            try:
                data = await query(WEBHOOK_DELIVERIES, {"endpoint": endpoint_id, "after": after})
            except DomainError as exc:
                error, status = exc.message, status_for(exc)
        urls = {e["id"]: e["url"] for e in data["webhookEndpoints"]}
        page = data["webhookDeliveries"]
        base = {"endpoint": endpoint_id} if endpoint_id else {}
        older = (
            "/webhooks/deliveries?" + urlencode({**base, "after": page["pageInfo"]["endCursor"]})
            if page["pageInfo"]["hasNextPage"]
            else None
        )
        return self.render(
            request,
            "webhook_deliveries.html",
            principal,
            status_code=status,
            deliveries=page["items"],
            endpoints=data["webhookEndpoints"],
            urls=urls,
            endpoint_id=endpoint_id,
            older=older,
            newest="/webhooks/deliveries" + ("?" + urlencode(base) if base else ""),
            paged=after is not None,
            pending=any(d["status"] == "PENDING" for d in page["items"]),
            error=error,
            active="webhooks",
        )
