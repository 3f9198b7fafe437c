"""The client's typed failures, apart from the client itself: commands report them (common.py)
without importing the HTTP stack."""


class ApiError(Exception):
    """The control plane refused the request; `code` is its `extensions.code`."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class ConnectionFailed(Exception):
    """The control plane could not be reached, or what answered is not one."""
