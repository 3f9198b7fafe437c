"""ASGI middleware that times every HTTP request into the latency histogram."""

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nodeplane.controlplane.metrics.instruments import request_duration
from nodeplane.controlplane.metrics.request_labels import (
    OPERATION_SCOPE_KEY,
    RouteTemplates,
    method_label,
)

_EVENT_STREAM = b"text/event-stream"


class RequestMetrics:
    """Observes each request's duration by route template, method and GraphQL root field.

    Server-Sent Event streams are left out: they last as long as a page stays open, which says
    nothing about how fast the server answers. Spec long-polls are kept, under their own
    `operation` (`executorSpecs`), so a dashboard can leave them out or look at them alone.
    """

    def __init__(self, app: ASGIApp, routes: RouteTemplates) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        streaming = False

        async def send_wrapper(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                for name, value in message.get("headers", ()):
                    if name.lower() == b"content-type" and value.startswith(_EVENT_STREAM):
                        streaming = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not streaming:
                request_duration.labels(
                    self.routes.label(scope),
                    method_label(scope["method"]),
                    scope.get(OPERATION_SCOPE_KEY, ""),
                ).observe(time.perf_counter() - started)
