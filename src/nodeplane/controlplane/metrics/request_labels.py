"""Bounded label values for request metrics: route templates, methods, GraphQL root fields.

A label value never comes from what a caller typed: paths become the template of the route
that matched, methods outside HTTP's usual few become `other`, and a GraphQL document is named
by its root field only when that field is one of the schema's.
"""

from collections.abc import Iterable, Mapping

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

# Where the GraphQL view leaves the root field it served, for the request metrics to read.
OPERATION_SCOPE_KEY = "nodeplane.operation"

UNMATCHED_ROUTE = "unmatched"
MULTIPLE_OPERATIONS = "multiple"
OTHER_OPERATION = "other"

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The method, or `other` for one outside the usual set."""
    return method if method in _METHODS else "other"


class RouteTemplates:
    """Maps the endpoint a request was routed to back to its route's path template."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        # Keyed by identity: endpoints are functions and ASGI apps, alive as long as the app.
        self._templates: dict[int, str] = {}
        for route in routes:
            if isinstance(route, Route):
                self._templates.setdefault(id(route.endpoint), route.path)
            elif isinstance(route, Mount):
                self._templates.setdefault(id(route.app), route.path + "/{path}")

    def add(self, endpoint: object, template: str) -> None:
        """Name an endpoint that is not one of the routes (the metrics listener's)."""
        self._templates[id(endpoint)] = template

    def label(self, scope: Scope) -> str:
        """The template of the route that served `scope`, or `unmatched`."""
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED_ROUTE
        return self._templates.get(id(endpoint), UNMATCHED_ROUTE)


def operation_label(root_fields: Mapping[str, frozenset[str]], known: frozenset[str]) -> str:
    """The document's one root field if the schema has it; `multiple` or `other` otherwise."""
    fields: set[str] = set()
    for names in root_fields.values():
        fields |= names
    if len(fields) > 1:
        return MULTIPLE_OPERATIONS
    if len(fields) == 1 and (name := next(iter(fields))) in known:
        return name
    return OTHER_OPERATION
