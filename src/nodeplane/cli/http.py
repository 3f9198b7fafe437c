"""httpx as the CLI imports it: without the parts of httpx and httpcore a CLI request never uses.

- httpx/__init__.py imports `httpx._main`, its own `httpx` command (click, rich.progress,
  rich.syntax, pygments), whenever click and rich are installed, and falls back to a stub
  `httpx.main` when that import fails. The CLI uses rich and uvicorn (the server's) brings click,
  so every command paid 30-60 ms for a tool it never runs.
- httpcore/_sync/__init__.py and _async/__init__.py import their HTTP/2 connection (h2, hpack:
  about 10 ms) when h2 is installed, for the package's public `HTTP2Connection` names, falling
  back to stubs when that fails. The client speaks HTTP/1.1 (httpx's default); httpcore's
  connection imports the HTTP/2 module itself, at the moment a connection negotiates HTTP/2.

A None in sys.modules makes an import fail (the import system's documented way to block one), so
each of those modules is blocked while httpx and httpcore are first imported, then unblocked: a
later import of any of them in this process works as usual.
"""

import sys

_UNUSED = ("httpx._main", "httpcore._sync.http2", "httpcore._async.http2")

_blocked = [
    name for name in _UNUSED if name.split(".")[0] not in sys.modules and name not in sys.modules
]
for name in _blocked:
    sys.modules[name] = None  # type: ignore[assignment]
try:
    # httpx imports httpcore when its first client is made; imported here, while blocked.
    import httpcore  # noqa: F401
    import httpx as httpx
finally:
    for name in _blocked:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]
