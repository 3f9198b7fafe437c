"""The executor runtime's pure tests run on asyncio, like the agent."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The runtime runs on asyncio."""
    return "asyncio"
