"""The event loop the server runs on: libuv's (uvloop), except under a profile
(controlplane/profiling.py): under cProfile (NODEPLANE_PROFILE) asyncio's shows the waits for I/O
as waits (its selector call is a Python frame) instead of charging them to the Python frame that
yielded last, and the loop-turns profile (NODEPLANE_LOOP_TURNS) times asyncio's callbacks, which
libuv runs in C."""

import asyncio
import json
from pathlib import Path

import pytest

from nodeplane.controlplane.http_server import uvicorn_config
from nodeplane.controlplane.profiling import (
    LOOP_TURNS_ENV,
    PROFILE_ENV,
    SLOWEST_KEPT,
    TurnLog,
    turn_label,
)
from tests.support.calls import deploy
from tests.support.fleet import FakeExecutor, make_org
from tests.support.gql import Client
from tests.support.server import admin_token, backend_server


def test_the_server_runs_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.delenv(LOOP_TURNS_ENV, raising=False)
    assert uvicorn_config(object(), "127.0.0.1", 0).loop == "uvloop"


@pytest.mark.parametrize("variable", [PROFILE_ENV, LOOP_TURNS_ENV])
def test_a_profiled_server_runs_on_asyncios_loop(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "/tmp/server.profile")
    assert uvicorn_config(object(), "127.0.0.1", 0).loop == "asyncio"


def test_the_turn_log_sums_by_label_and_keeps_the_slowest_turns_in_order() -> None:
    log = TurnLog()
    for i in range(200):
        log.add("task a", 0.0004)  # 0.4 ms
        log.add("task b", (i + 1) / 1000)  # 1 to 200 ms
    summary = log.summary()
    assert summary["turns"] == 400
    assert summary["histogram"]["<= 0.5 ms"] == 200
    assert summary["histogram"]["<= 1 ms"] == 1
    assert summary["histogram"]["<= 256 ms"] == 200 - 128
    assert [x["label"] for x in summary["by_label"]] == ["task b", "task a"]
    b = summary["by_label"][0]
    assert (b["turns"], b["longest_ms"], b["over_10ms"]) == (200, 200.0, 190)
    assert [s["ms"] for s in summary["slowest"]] == [
        float(ms) for ms in range(200, 200 - SLOWEST_KEPT, -1)
    ]


def test_a_turn_is_labelled_by_its_task_or_its_callback() -> None:
    """A task's step by its coroutine (the package's innermost three, where it has any: the
    server test below), any other callback by its name."""

    async def main() -> tuple[str, str]:
        async def outside_the_package() -> None:
            await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        task = loop.create_task(outside_the_package())
        step = loop._ready[-1]  # type: ignore[attr-defined]  # the task's first step, scheduled
        other = loop.call_soon(print)
        labels = turn_label(step._callback), turn_label(other._callback)  # type: ignore[attr-defined]
        other.cancel()
        await task
        return labels

    task_label, other_label = asyncio.run(main())
    assert task_label == (
        "task test_a_turn_is_labelled_by_its_task_or_its_callback.<locals>.main.<locals>"
        ".outside_the_package"
    )
    assert other_label == "print"


@pytest.mark.server
def test_a_server_asked_to_time_its_loop_turns_writes_what_held_its_loop(
    tmp_path: Path,
) -> None:
    out = tmp_path / "turns.json"
    with backend_server("sqlite", tmp_path, {LOOP_TURNS_ENV: str(out)}) as server:
        org = make_org(server.url, Client(server.url, admin_token(server.url)))
        executor = FakeExecutor(server.url, org.executor_key())
        executor.sync()
        deploy(org.owner, executor, "n0")
        for _ in range(5):
            executor.sync()
    summary = json.loads(out.read_text())
    assert summary["turns"] == sum(summary["histogram"].values()) > 0
    labels = [x["label"] for x in summary["by_label"]]
    # Steps of the executors' own calls and of the users' GraphQL, named by the package's
    # coroutines they stopped in.
    assert any("ExecutorCalls" in label for label in labels), labels
    assert any("Mutation" in label or "GraphQL" in label for label in labels), labels
    slowest = [s["ms"] for s in summary["slowest"]]
    assert slowest == sorted(slowest, reverse=True)
    assert len(slowest) == min(SLOWEST_KEPT, summary["turns"])
