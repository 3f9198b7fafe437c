"""Reading a request body once in a middleware and handing it on to the app behind it."""

from starlette.types import Message, Receive


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields `body` (already read from the client) first, then what follows."""
    # Handed over once and then let go: a held spec poll keeps this receive for up to 30 s.
    unread = [body]

    async def replay() -> Message:
        if unread:
            return {"type": "http.request", "body": unread.pop(), "more_body": False}
        return await receive()

    return replay
