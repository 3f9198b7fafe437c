"""One node's trouble never touches another, and the agent's own state heals (issue 12).

Real control plane, real agent on the process driver, real litecoind regtest nodes.
"""

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.litecoin_nodes import (
    LogWatcher,
    create_node,
    executor_id,
    feed,
    lifecycle,
    node,
    node_pids,
    single_pid,
    start_count,
    unit_active_state,
    wait_phase,
)
from tests.support.agent import AgentProcess
from tests.support.fleet import Org

# ---- specs.json unreadable -------------------------------------------------------------------

CORRUPTIONS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("emptied", lambda good: b""),
    ("truncated", lambda good: good[: len(good) // 2]),
    ("random bytes", lambda good: os.urandom(len(good))),
]


def _alive_until(agent: AgentProcess, reached: Callable[[], Any], what: str, timeout: float) -> Any:
    """Wait for `reached` while the agent runs; fail at once if the agent exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert agent.popen is not None
        code = agent.popen.poll()
        assert code is None, f"the agent exited ({code}) waiting for {what}; see {agent.log_path}"
        if value := reached():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


REPORTED = "query($id: UUID!) { node(id: $id) { phase observed observedAt } }"


def _reported_since(org: Org, node_id: str, since: datetime) -> dict[str, Any] | None:
    """The node once the agent reported it after `since`, else None."""
    n: dict[str, Any] = org.owner(REPORTED, {"id": node_id})["node"]
    fresh = n["observedAt"] is not None and datetime.fromisoformat(n["observedAt"]) > since
    return n if fresh else None


@pytest.mark.parametrize("driver", ["process"])
def test_unreadable_specs_json_is_moved_aside_and_running_nodes_adopted(
    e2e_org: Org, agent: AgentProcess
) -> None:
    """specs.json emptied, truncated, or overwritten with random bytes while the agent is down:
    the agent starts anyway, moves the file aside with an event, fetches every spec again and
    adopts the node's running litecoind: same pid, not started again, still RUNNING."""
    node_id = create_node(e2e_org, agent, "kept")
    wait_phase(e2e_org, node_id, "RUNNING")
    pid = single_pid(agent, "kept")
    starts = start_count(agent, "kept")
    specs = agent.data_dir / "state" / "specs.json"

    for label, corrupt in CORRUPTIONS:
        agent.kill()
        specs.write_bytes(corrupt(specs.read_bytes()))
        watcher = LogWatcher(agent)
        since = datetime.now(UTC)
        agent.start()

        def unreadable_logged(w: LogWatcher = watcher) -> dict[str, Any] | None:
            return next((r for r in w.read() if r.get("event") == "state.unreadable"), None)

        record = _alive_until(agent, unreadable_logged, f"state.unreadable ({label})", 30)
        assert record["path"] == str(specs) and record["level"] == "error", record

        def adopted(since: datetime = since) -> dict[str, Any] | None:
            n = _reported_since(e2e_org, node_id, since)
            return n if n and n["phase"] == "RUNNING" and node_id in specs.read_text() else None

        reported = _alive_until(agent, adopted, f"the node held and reported again ({label})", 60)
        assert reported["observed"]["processes"][0]["pid"] == pid, label
        assert single_pid(agent, "kept") == pid, f"{label}: the node was restarted"
        assert start_count(agent, "kept") == starts, f"{label}: litecoind started again"

    moved = sorted(specs.parent.glob("specs.json.corrupt-*"))
    assert len(moved) == len(CORRUPTIONS), moved
    ex_id = executor_id(e2e_org, agent)

    def rebuilt_events() -> list[dict[str, Any]] | None:
        found = [
            e for e in feed(e2e_org, executorId=ex_id) if e["type"] == "executor.state.rebuilt"
        ]
        return found if len(found) == len(CORRUPTIONS) else None

    rebuilt = wait_for(rebuilt_events, timeout=30, what="an executor.state.rebuilt per corruption")
    assert all(str(specs) in e["message"] for e in rebuilt)
    assert node(e2e_org, node_id)["phase"] == "RUNNING"


# ---- a frozen node's stop ----------------------------------------------------------------------

# litecoind's stop timeout is 600 s: anything that waited for the frozen stop would show.
PROMPT_SECONDS = 60.0


@pytest.mark.parametrize("driver", ["process"])
def test_a_frozen_stop_holds_back_no_other_node(e2e_org: Org, agent: AgentProcess) -> None:
    """Node A's litecoind is frozen (SIGSTOP) and asked to stop: its stop waits out the 600 s
    stop timeout. Meanwhile node B is asked to stop and stops at once, and node C's litecoind,
    killed with SIGKILL, is restarted by its restart policy."""
    frozen = create_node(e2e_org, agent, "frozen")
    other = create_node(e2e_org, agent, "other")
    crashy = create_node(e2e_org, agent, "crashy")
    for node_id in (frozen, other, crashy):
        wait_phase(e2e_org, node_id, "RUNNING")
    frozen_pid = single_pid(agent, "frozen")
    crashy_pid = single_pid(agent, "crashy")

    os.kill(frozen_pid, signal.SIGSTOP)
    try:
        frozen_revision = lifecycle(e2e_org, frozen, "STOP")
        wait_for(
            lambda: unit_active_state(agent, "frozen") == "deactivating",
            timeout=30,
            what="the frozen node's stop under way",
        )
        asked = time.monotonic()
        other_revision = lifecycle(e2e_org, other, "STOP")
        wait_phase(e2e_org, other, "STOPPED", revision=other_revision, timeout=PROMPT_SECONDS)
        assert node_pids(agent, "other") == []

        os.kill(crashy_pid, signal.SIGKILL)

        def restarted() -> bool:
            pids = node_pids(agent, "crashy")
            return len(pids) == 1 and pids[0] != crashy_pid and agent.main_pid("crashy") == pids[0]

        wait_for(restarted, timeout=PROMPT_SECONDS, what="the killed node restarted")
        wait_phase(e2e_org, crashy, "RUNNING", timeout=PROMPT_SECONDS)
        assert time.monotonic() - asked < 2 * PROMPT_SECONDS

        # All the while, the frozen node's stop was (and is) still waiting.
        assert node_pids(agent, "frozen") == [frozen_pid]
        assert unit_active_state(agent, "frozen") == "deactivating"
        assert node(e2e_org, frozen)["phase"] == "STOPPING"
    finally:
        os.kill(frozen_pid, signal.SIGCONT)
    # Thawed, it handles the SIGTERM waiting for it and the stop completes.
    wait_phase(e2e_org, frozen, "STOPPED", revision=frozen_revision, timeout=90)
    assert node_pids(agent, "frozen") == []
