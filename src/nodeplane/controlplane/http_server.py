"""How the control plane is served over HTTP: one uvicorn configuration for `server` and `up`."""

from typing import Any

import uvicorn

# The largest request head (request line and headers) a client may send. h11 refuses a head that
# is still incomplete past this size, but one that arrives in a single read is accepted whatever
# its length, so below this bound the answer to a long URL would depend on how the bytes happened
# to be split on the wire. Set well above any URL the pages accept (their filters answer a typed
# 400 for over-long values) so that the page, not the parser, decides.
MAX_REQUEST_HEAD_BYTES = 256 * 1024


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration the control plane runs under; `options` add to it."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        **options,
    )
