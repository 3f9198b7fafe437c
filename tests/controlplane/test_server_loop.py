"""The event loop the server runs on: libuv's (uvloop), except under cProfile (NODEPLANE_PROFILE),
where asyncio's shows the waits for I/O as waits (its selector call is a Python frame) instead of
charging them to the Python frame that yielded last."""

import pytest

from nodeplane.controlplane.http_server import uvicorn_config
from nodeplane.controlplane.profiling import PROFILE_ENV


def test_the_server_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert uvicorn_config(object(), "127.0.0.1", 0).loop == "uvloop"


def test_a_profiled_server_runs_on_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, "/tmp/server.pstats")
    assert uvicorn_config(object(), "127.0.0.1", 0).loop == "asyncio"
