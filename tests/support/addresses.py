"""Clients that call a test server from a chosen loopback address.

The server listens on 127.0.0.1 and Linux routes all of 127.0.0.0/8 over loopback, so binding the
client's source address makes the server see a different client host (`request.client.host`):
that is how tests play an attacker at one address and the real user at another.
"""

import random
from typing import Any

import httpx

from tests.support.gql import Client
from tests.support.tls import TLS


def fresh_loopback_address() -> str:
    """A random loopback address other than 127.0.0.1, so a test's throttle keys are its own."""
    while True:
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        if address != "127.0.0.1":
            return address


class AddressedClient(Client):
    """A `Client` whose requests leave from `address` (and may claim another via a header)."""

    def __init__(
        self,
        base_url: str,
        address: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(base_url, token)
        self.address = address
        self.headers = headers or {}
        self._http = httpx.Client(transport=httpx.HTTPTransport(local_address=address, verify=TLS))

    def raw(
        self, query: str, variables: dict[str, Any] | None = None, timeout: float = 30
    ) -> httpx.Response:
        headers = dict(self.headers)
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return self._http.post(
            f"{self.base_url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
            timeout=timeout,
        )

    def as_(self, token: str | None) -> "AddressedClient":
        """The same server and address, another principal."""
        return AddressedClient(self.base_url, self.address, token, self.headers)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
