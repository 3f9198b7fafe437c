"""The load generator's path is correct: simulated executors leave exactly the observed
revisions they hold at the server, with no errors (a correctness check, not a timing test)."""

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest
from bench.loadgen.run import LoadRun, lifecycle_actions
from bench.loadgen.simulated import busy_retry_after
from bench.loadgen.stats import Progress, WorkerReport
from bench.loadgen.target import target
from bench.loadgen.worker import LoadOptions

from tests.support.calls import wait_until
from tests.support.gql import Client

pytestmark = pytest.mark.server

EXECUTORS = 200
NODES = 10
SPREAD = 10.0

NODES_PAGE = """
query($after: String) {
  nodes(first: 200, after: $after) {
    items { id revision observedRevision phase desiredState }
    pageInfo { endCursor hasNextPage }
  }
}"""


def all_nodes(client: Client) -> dict[str, dict[str, Any]]:
    """Every node of the caller's organization, by id."""
    out: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        page = client(NODES_PAGE, {"after": after})["nodes"]
        out.update({n["id"]: n for n in page["items"]})
        if not page["pageInfo"]["hasNextPage"]:
            return out
        after = page["pageInfo"]["endCursor"]


def test_simulated_executors_leave_exact_observed_revisions(tmp_path: Path) -> None:
    # The server's request budget as long as the simulated executors' timeout: a call slowed by
    # a machine busy with other tests is an answer late, not an error of the load path.
    budget = {"NODEPLANE_REQUEST_TIME_BUDGET": "60"}
    with target("sqlite", workdir=tmp_path, extra_env=budget) as t:
        specs = t.fleet("lg", EXECUTORS, NODES)
        node_ids = [n for s in specs for n in s.node_ids]
        # Several workers, as in a benchmark; every executor syncs at least once mid-run, and
        # once more at the end with what its last poll returned. A 20 s cadence and generous
        # timeouts keep the server well below saturation on a slow or busy machine (at 10 s it
        # saturated the machine of 2026-12-03 afternoon, docs/benchmarks.md): this checks
        # correctness, not speed.
        # Metric values move once per 30 s interval at each executor's own moment (the agent's
        # default), so some syncs in the run store moved numbers and the rest repeat themselves;
        # a faster cadence made this test a load on the machine that other tests' timing felt.
        options = LoadOptions(
            sync_interval=20.0, spread=SPREAD, request_timeout=60.0, final_sync=True
        )
        run = LoadRun(t.server.url, specs, options, per_worker=EXECUTORS // 2)
        run.start()
        try:
            # Every executor has started (its first sync goes half a second after its poll).
            time.sleep(SPREAD + 2.0)
            with lifecycle_actions(t.server.url, t.token, node_ids, rate=3.0) as actions:
                # A count, not a duration: on a machine busy with other tests an action can
                # take seconds, and this checks that actions are picked up, not how fast.
                wait_until(lambda: len(actions.sent) >= 5, 90, what="five lifecycle actions")
            time.sleep(2.0)
        finally:
            report = run.stop()

        assert dict(report.errors) == {}
        assert actions.errors == 0
        assert len(actions.sent) >= 5
        # Every action's revision reached its executor through the held poll.
        assert set(actions.sent) <= set(report.pickups)
        assert len(report.syncs) >= 2 * EXECUTORS  # one or more mid-run, and the last

        nodes = all_nodes(Client(t.server.url, t.token))
        assert set(nodes) == set(node_ids)
        # The server holds, for every node, exactly the revision the executor last reported,
        # and that is the node's current revision (the executors caught up before reporting).
        assert {nid: n["observedRevision"] for nid, n in nodes.items()} == report.reported
        assert {nid: n["revision"] for nid, n in nodes.items()} == report.reported
        changed = {node_id for node_id, _ in actions.sent}
        assert {nid for nid, r in report.reported.items() if r > 1} == changed
        # Each node's phase follows from what was reported: running, or stopped where the
        # actions left it stopped.
        for n in nodes.values():
            desired = n["desiredState"].lower()
            assert n["phase"].lower() == ("running" if desired == "running" else "stopped")


def test_progress_counts_each_sync_and_failure_once() -> None:
    progress = Progress(multiprocessing.get_context("spawn"), slow_after=0.1)
    report = WorkerReport(progress=progress)
    report.synced(1.0, 0.05)
    report.synced(2.0, 0.25)
    report.error("sync ReadTimeout", 3.0)
    report.error("poll ReadTimeout", 3.0)  # a poll's failure is not a sync's
    assert progress.counts() == (2, 1, 1)
    assert report.syncs == [(1.0, 0.05), (2.0, 0.25)]


def test_settle_waits_for_an_interval_answered_in_time(tmp_path: Path) -> None:
    with target("sqlite", workdir=tmp_path) as t:
        specs = t.fleet("st", 20, 2)
        options = LoadOptions(sync_interval=1.0, spread=1.0)
        run = LoadRun(t.server.url, specs, options, per_worker=10)
        run.start()
        try:
            settled = run.settle(minimum=2.0, interval=1.0, cap=30.0)
        finally:
            report = run.stop()
        assert settled is not None and 2.0 <= settled < 30.0
        answered, slow, failed = run.counts()
        # The live counts are the report's: every answered sync once, no failure.
        assert answered == len(report.syncs) and failed == 0 == report.errors.total()
        assert slow == sum(1 for _, seconds in report.syncs if seconds > 0.1)

        # No interval counts as absorbed while every sync is "slow": the cap comes first.
        never = LoadRun(t.server.url, specs, options, per_worker=10, slow_after=0.0)
        never.start()
        try:
            assert never.settle(minimum=1.0, interval=1.0, cap=3.0) is None
        finally:
            never.stop()


def test_a_simulated_executor_reads_a_busy_servers_retry_hint_as_an_agent_does() -> None:
    busy = b'{"errors": [{"message": "busy", "extensions": {"code": "unavailable", "retryAfterSeconds": 7}}]}'
    assert busy_retry_after(busy) == 7.0
    other = b'{"errors": [{"message": "no", "extensions": {"code": "bad_request"}}]}'
    assert busy_retry_after(other) is None
    assert busy_retry_after(b"<html>") is None
    assert busy_retry_after(b'{"errors": [{"extensions": "x"}]}') is None
