"""`nodeplane nodes start|stop|restart|delete`, with `--wait` driven by a protocol-level executor."""

import signal
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.cli.conftest import Cli, act, deploy, next_spec
from tests.support.fleet import FakeExecutor, Org

S = ProcessStatus
Background = Callable[[Callable[[], Any]], Future[Any]]


def running_node(org: Org, executor: FakeExecutor, name: str = "ltc-1") -> dict[str, Any]:
    node = deploy(org, executor, name)
    executor.observe(node["id"], 1, S.RUNNING)
    return node


def stopped_node(org: Org, executor: FakeExecutor) -> tuple[str, int]:
    node = running_node(org, executor)
    revision = act(org, node["id"], "STOP")
    executor.observe(node["id"], revision, S.STOPPED)
    return node["id"], revision


def applies(
    executor: FakeExecutor, node_id: str, after: int, *steps: ProcessStatus
) -> Callable[[], None]:
    """The executor's side: wait for the next revision, then report each status in turn."""

    def run() -> None:
        spec = next_spec(executor, node_id, after)
        for i, status in enumerate(steps):
            if i:
                time.sleep(1.2)  # long enough for the CLI to see the step in between
            executor.observe(node_id, spec.revision, status)

    return run


def test_stop_and_start_with_wait(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node = running_node(org, executor)

    background(applies(executor, node["id"], 1, S.STOPPING, S.STOPPED))
    stopped = cli("nodes", "stop", "ltc-1", "--wait", "--timeout", "30", "-o", "json")
    assert stopped.code == 0, stopped.stderr
    assert stopped.json()["phase"] == "stopped"
    assert stopped.json()["revision"] == 2
    assert "ltc-1: stopping" in stopped.stderr  # one status line per phase when not on a terminal

    background(applies(executor, node["id"], 2, S.STARTING, S.RUNNING))
    started = cli("nodes", "start", "ltc-1", "--wait", "--expected-revision", "2")
    assert started.code == 0, started.stderr
    assert "ltc-1 is running (revision 3)" in started.stdout


def test_deploy_with_wait(cli: Cli, executor: FakeExecutor, background: Background) -> None:
    def first_apply() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for spec in executor.poll({}, wait=5):
                if spec.name == "ltc-w":
                    executor.observe(str(spec.node_id), spec.revision, S.RUNNING)
                    return
        raise AssertionError("ltc-w never reached the executor")

    background(first_apply)
    result = cli(
        "nodes",
        "deploy",
        "ltc-w",
        "--chain",
        "litecoin",
        "--network",
        "regtest",
        "--client",
        "node=litecoind:0.21.4",
        "--wait",
        "--timeout",
        "30",
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    assert result.json()["phase"] == "running"
    assert "ltc-w: provisioning" in result.stderr


def test_restart_waits_for_the_new_revision(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node = running_node(org, executor)
    # Already running at revision 1: only an observation of revision 2 may end the wait.
    background(applies(executor, node["id"], 1, S.STARTING, S.RUNNING))
    result = cli("nodes", "restart", node["id"], "--wait", "-o", "json")
    assert result.code == 0, result.stderr
    body = result.json()
    assert (body["phase"], body["revision"], body["observedRevision"]) == ("running", 2, 2)
    assert body["spec"]["restartGeneration"] == 1
    assert "ltc-1: configuring" in result.stderr or "ltc-1: starting" in result.stderr


def test_error_phase_fails_the_wait(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node_id, revision = stopped_node(org, executor)

    def crash() -> None:
        spec = next_spec(executor, node_id, revision)
        process = ObservedProcess(
            role="node", status=S.ERROR, message="litecoind exited with status 1"
        )
        executor.sync({node_id: ObservedNodeState(revision=spec.revision, processes=[process])})

    background(crash)
    result = cli("nodes", "start", "ltc-1", "--wait", "--timeout", "30", "-o", "json")
    assert result.code == 4
    assert result.stdout == ""
    assert (
        "error: ltc-1 did not become running: node: litecoind exited with status 1" in result.stderr
    )


def test_wait_times_out(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    running_node(org, executor)
    started = time.monotonic()
    result = cli("nodes", "stop", "ltc-1", "--wait", "--timeout", "2")
    assert result.code == 5
    assert (
        "error: timed out after 2s waiting for ltc-1 to be stopped (phase: stopping)"
        in result.stderr
    )
    assert time.monotonic() - started < 15


def test_ctrl_c_ends_the_wait_not_the_change(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    running_node(org, executor)
    proc = cli.start("nodes", "stop", "ltc-1", "--wait")
    deadline = time.monotonic() + 30
    while cli("nodes", "get", "ltc-1", "-o", "json").json()["revision"] < 2:
        assert time.monotonic() < deadline
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert "stopped waiting; the change to ltc-1 stays requested" in stderr
    assert cli("nodes", "get", "ltc-1", "-o", "json").json()["desiredState"] == "stopped"


def test_without_wait_the_change_is_only_requested(
    cli: Cli, org: Org, executor: FakeExecutor
) -> None:
    running_node(org, executor)
    result = cli("nodes", "stop", "ltc-1")
    assert result.code == 0
    assert "stop requested for ltc-1 (revision 2" in result.stdout
    again = cli("nodes", "stop", "ltc-1")
    assert "ltc-1 is already desired stopped (revision 2" in again.stdout  # no new revision

    restart_stopped = cli("nodes", "restart", "ltc-1")
    assert restart_stopped.code == 1
    assert "is stopped: start it instead (invalid_action)" in restart_stopped.stderr

    conflict = cli("nodes", "start", "ltc-1", "--expected-revision", "1")
    assert conflict.code == 1
    assert "is at revision 2, not 1 (revision_conflict)" in conflict.stderr


def test_delete_asks_first(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    running_node(org, executor)
    declined = cli("nodes", "delete", "ltc-1", input="n\n")
    assert declined.code == 1
    assert "data stays on the executor" in declined.stderr
    assert "not deleted" in declined.stderr
    no_answer = cli("nodes", "delete", "ltc-1", "--delete-data")
    assert no_answer.code == 1
    assert "sync from scratch" in no_answer.stderr
    assert cli("nodes", "get", "ltc-1", "-o", "json").json()["phase"] == "running"

    conflict = cli("nodes", "delete", "ltc-1", "--yes", "--expected-revision", "7")
    assert conflict.code == 1
    assert "(revision_conflict)" in conflict.stderr

    accepted = cli("nodes", "delete", "ltc-1", "--delete-data", "-o", "json", input="y\n")
    assert accepted.code == 0, accepted.stderr
    body = accepted.json()
    assert body["phase"] == "deleting"
    assert body["retainData"] is False

    deleting = cli("nodes", "stop", "ltc-1")
    assert deleting.code == 1
    assert "(node_deleting)" in deleting.stderr


def test_delete_keeping_data_and_wait_until_gone(
    cli: Cli, org: Org, executor: FakeExecutor, background: Background
) -> None:
    node = running_node(org, executor)

    def tear_down() -> None:
        spec = next_spec(executor, node["id"], 1)
        assert spec.deleted and spec.retain_data
        time.sleep(1.2)
        assert executor.confirm_teardown(node["id"])

    background(tear_down)
    result = cli("nodes", "delete", "ltc-1", "--keep-data", "--yes", "--wait", "--timeout", "30")
    assert result.code == 0, result.stderr
    assert "ltc-1 is deleted (data kept)" in result.stdout
    assert "ltc-1: deleting" in result.stderr

    gone = cli("nodes", "get", "ltc-1")
    assert gone.code == 1 and "not found (not_found)" in gone.stderr
    # History outlives the node: by id, its revisions and events are still there.
    revisions = cli("nodes", "revisions", node["id"], "-o", "json").json()
    assert [r["revision"] for r in revisions] == [1]
    events = cli("nodes", "events", node["id"], "-o", "json").json()
    assert "node.deleted" in {e["type"] for e in events}
