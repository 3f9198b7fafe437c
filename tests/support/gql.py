"""A small synchronous GraphQL client for tests, with typed errors."""

from typing import Any

import httpx

from tests.support.tls import TLS


class GraphQLError(Exception):
    """The API answered with errors; `code` is the first error's `extensions.code`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"])
        self.errors = errors
        self.code: str = errors[0].get("extensions", {}).get("code", "")
        self.extensions: dict[str, Any] = errors[0].get("extensions", {})


class Client:
    """Calls POST /graphql as one principal (a session token or an API key, or nobody)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token

    def raw(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=timeout,
            verify=TLS,
        )

    def __call__(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30
    ) -> Any:
        body = self.raw(query, variables, timeout).json()
        if body.get("errors"):
            raise GraphQLError(body["errors"])
        return body["data"]

    def as_(self, token: str | None) -> "Client":
        """The same server, another principal."""
        return Client(self.base_url, token)
