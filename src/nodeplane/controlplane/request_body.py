"""Reading a request body once in a middleware and handing it on to the app behind it."""

from starlette.types import Message, Receive


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields `body` (already read from the client) first, then what follows."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
