"""Per-node reconcile bookkeeping: no node waits on another, none runs twice at once, every
failure stays the failing node's (its applyError, one event), retries back off."""

import asyncio
import errno
import itertools
from pathlib import Path

import pytest
import structlog

from nodeplane.executor.runtime.backend import ApplyError
from nodeplane.executor.runtime.runtime import Intervals
from nodeplane.protocol import RuntimeEventType
from tests.executor.runtime_harness import FAST, ScriptedBackend, assigned, eventually, running

pytestmark = pytest.mark.anyio


async def test_a_stuck_node_never_delays_another_nodes_apply_teardown_or_supervision(
    tmp_path: Path,
) -> None:
    backend = ScriptedBackend(gates={"stuck": asyncio.Event()})  # its apply never returns
    async with running(tmp_path, backend) as h:
        h.push(assigned("stuck"), assigned("other"), assigned("doomed"))
        await eventually(
            lambda: ("other", 1) in backend.applied and ("doomed", 1) in backend.applied
        )
        assert backend.active.get("stuck") == 1

        h.push(assigned("other", 2), assigned("doomed", 2, deleted=True))
        await eventually(lambda: ("other", 2) in backend.applied)
        doomed = assigned("doomed").node_id
        await eventually(lambda: doomed in h.plane.confirmed)
        assert "doomed" in backend.torn_down and doomed not in h.runtime.state.nodes

        calls = backend.housekeeping_calls
        await eventually(lambda: backend.housekeeping_calls > calls + 2)
        assert backend.active["stuck"] == 1 and ("stuck", 1) not in backend.applied

        backend.gates["stuck"].set()
        await eventually(lambda: ("stuck", 1) in backend.applied)
    assert backend.overlaps == []


async def test_a_node_is_never_applied_concurrently_with_itself(tmp_path: Path) -> None:
    gate = asyncio.Event()
    backend = ScriptedBackend(gates={"slow": gate})
    async with running(tmp_path, backend) as h:
        h.push(assigned("slow", 1))
        await eventually(lambda: backend.active.get("slow") == 1)
        # New revisions and resyncs while the first apply hangs: they wait for it.
        h.push(assigned("slow", 2))
        h.push(assigned("slow", 3))
        await asyncio.sleep(3 * FAST.reconcile)
        assert backend.active["slow"] == 1 and backend.applied == []

        gate.set()
        await eventually(lambda: ("slow", 3) in backend.applied)
        await eventually(
            lambda: h.runtime.state.nodes[assigned("slow").node_id].applied_revision == 3
        )
    assert backend.overlaps == []
    # The hung apply was of revision 1; the next one took the latest spec, never revision 2.
    assert ("slow", 2) not in backend.applied


async def test_a_deleted_node_is_not_torn_down_while_it_is_being_applied(tmp_path: Path) -> None:
    gate = asyncio.Event()
    backend = ScriptedBackend(gates={"n": gate})
    async with running(tmp_path, backend) as h:
        h.push(assigned("n", 1))
        await eventually(lambda: backend.active.get("n") == 1)
        h.push(assigned("n", 2, deleted=True))
        await asyncio.sleep(3 * FAST.reconcile)
        assert backend.torn_down == []
        gate.set()
        await eventually(lambda: assigned("n").node_id in h.plane.confirmed)
    assert backend.overlaps == [] and backend.torn_down == ["n"]


@pytest.mark.parametrize(
    ("raised", "reported"),
    [
        (ApplyError("litecoind 9.9 is not installed"), "litecoind 9.9 is not installed"),
        (PermissionError(errno.EACCES, "Permission denied"), "PermissionError: [Errno 13]"),
        (RuntimeError("a bug"), "RuntimeError: a bug"),
        (KeyError("ports"), "KeyError: 'ports'"),
    ],
)
async def test_any_apply_failure_is_the_nodes_apply_error_and_one_event(
    tmp_path: Path, raised: BaseException, reported: str
) -> None:
    backend = ScriptedBackend(apply_raises={"bad": raised})
    bad, good = assigned("bad", 4), assigned("good")
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, backend) as h:
            h.push(bad, good)
            observed = await eventually(lambda: h.plane.observed(bad.node_id))
            assert observed.revision == 4
            assert observed.apply_error is not None and reported in observed.apply_error
            await eventually(lambda: h.runtime.queue.num_requeues(bad.node_id) >= 3)
            await eventually(lambda: h.plane.events)
            await asyncio.sleep(2 * FAST.heartbeat)
            # The other node is applied and reported as if nothing happened.
            assert ("good", 1) in backend.applied
            assert h.plane.observed(good.node_id).apply_error is None

            failed = [e for e in h.plane.events if e.type is RuntimeEventType.NODE_APPLY_FAILED]
            assert len(failed) == 1, "one event per distinct error, not one per retry"
            assert failed[0].node_id == bad.node_id and reported in failed[0].message
            records = [r for r in logs if r["event"] == "apply.failed"]
            assert len(records) == 1, "logged once, not once per retry"
            unexpected = not isinstance(raised, ApplyError)
            assert (records[0].get("exc_info") is not None) == unexpected

            # Fixed: the next retry applies it, the error is gone and the backoff reset.
            del backend.apply_raises["bad"]
            await eventually(lambda: ("bad", 4) in backend.applied)
            await eventually(lambda: h.plane.observed(bad.node_id).apply_error is None)
            assert h.runtime.queue.num_requeues(bad.node_id) == 0


async def test_a_failing_node_is_retried_with_backoff_not_on_every_resync(tmp_path: Path) -> None:
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    class Counting(ScriptedBackend):
        async def apply(self, node):  # type: ignore[no-untyped-def]
            attempts.append(loop.time())
            raise ApplyError("no")

    intervals = Intervals(
        heartbeat=0.05, reconcile=0.005, report=0.05, node_retry_base=0.02, node_retry_cap=0.08
    )
    async with running(tmp_path, Counting(), intervals) as h:
        h.push(assigned("bad"))
        await eventually(lambda: len(attempts) >= 5)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 0.02, 0.04, 0.08, 0.08...: never the resync's 5 ms, and doubling up to the cap.
    assert all(gap >= 0.015 for gap in gaps), gaps
    assert gaps[2] >= 0.06 and gaps[3] >= 0.06, gaps


async def test_a_new_spec_is_applied_at_once_whatever_the_backoff(tmp_path: Path) -> None:
    backend = ScriptedBackend(apply_raises={"n": ApplyError("bad config")})
    intervals = Intervals(
        heartbeat=0.02, reconcile=0.02, report=0.02, node_retry_base=30, node_retry_cap=30
    )
    async with running(tmp_path, backend, intervals) as h:
        h.push(assigned("n", 1))
        await eventually(lambda: h.runtime.queue.num_requeues(assigned("n").node_id) == 1)
        del backend.apply_raises["n"]
        h.push(assigned("n", 2))
        await eventually(lambda: ("n", 2) in backend.applied, within=2)


async def test_observe_failure_is_reported_as_the_nodes_error_once(tmp_path: Path) -> None:
    backend = ScriptedBackend(observe_raises={"blind": OSError(errno.EIO, "I/O error")})
    blind, seen = assigned("blind"), assigned("seen")
    async with running(tmp_path, backend) as h:
        h.push(blind, seen)
        observed = await eventually(lambda: h.plane.observed(blind.node_id))
        assert observed.apply_error == "cannot observe: OSError: [Errno 5] I/O error"
        assert observed.processes == []
        await eventually(lambda: h.plane.observed(seen.node_id))
        assert h.plane.observed(seen.node_id).processes[0].status == "running"
        await asyncio.sleep(5 * FAST.report)
        failed = [e for e in h.plane.events if e.node_id == blind.node_id]
        assert len(failed) == 1 and failed[0].type is RuntimeEventType.NODE_APPLY_FAILED

        del backend.observe_raises["blind"]
        await eventually(lambda: h.plane.observed(blind.node_id).apply_error is None)


async def test_teardown_failure_is_contained_reported_and_retried(tmp_path: Path) -> None:
    backend = ScriptedBackend(teardown_raises={"gone": OSError(errno.EBUSY, "Device busy")})
    gone = assigned("gone")
    async with running(tmp_path, backend) as h:
        h.push(gone)
        await eventually(lambda: ("gone", 1) in backend.applied)
        h.push(assigned("gone", 2, deleted=True), assigned("after"))
        await eventually(lambda: ("after", 1) in backend.applied)
        observed = await eventually(
            lambda: (o := h.plane.observed(gone.node_id)) and o.apply_error and o
        )
        assert "Device busy" in observed.apply_error
        await eventually(lambda: h.runtime.queue.num_requeues(gone.node_id) >= 2)
        failed = [e for e in h.plane.events if e.type is RuntimeEventType.NODE_TEARDOWN_FAILED]
        assert len(failed) == 1
        assert h.plane.confirmed == []

        del backend.teardown_raises["gone"]
        await eventually(lambda: gone.node_id in h.plane.confirmed)
        assert gone.node_id not in h.runtime.state.nodes


async def test_housekeeping_failures_are_contained_and_reported_once(tmp_path: Path) -> None:
    backend = ScriptedBackend(housekeeping_raises=RuntimeError("supervisor state unreadable"))
    async with running(tmp_path, backend) as h:
        h.push(assigned("n"))
        await eventually(lambda: backend.housekeeping_calls >= 5)
        await eventually(lambda: ("n", 1) in backend.applied)
        await eventually(lambda: h.plane.events)
        await asyncio.sleep(3 * FAST.heartbeat)
        failed = [
            e for e in h.plane.events if e.type is RuntimeEventType.EXECUTOR_HOUSEKEEPING_FAILED
        ]
        assert len(failed) == 1 and failed[0].node_id is None
        assert "supervisor state unreadable" in failed[0].message


async def test_held_specs_are_saved_only_when_they_change(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        h.push(assigned("n"))
        state = h.runtime.state
        await eventually(lambda: state.nodes.get(assigned("n").node_id, None))
        await eventually(lambda: state.nodes[assigned("n").node_id].applied_revision == 1)
        # Seen healthy once (the revision an auto-rollback goes back to): saved once more.
        await eventually(lambda: state.nodes[assigned("n").node_id].healthy_revision == 1)
        written = state.path.stat().st_mtime_ns, state.path.stat().st_ino
        await asyncio.sleep(5 * FAST.reconcile)  # resyncs and reports: nothing changes
        assert (state.path.stat().st_mtime_ns, state.path.stat().st_ino) == written
    assert not list(state.path.parent.glob(".state-*"))


async def test_an_unreadable_state_file_is_reported_once_and_the_specs_fetched_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "specs.json"
    path.parent.mkdir()
    path.write_bytes(b'{"version": 1, "nodes": {"')  # truncated
    async with running(tmp_path) as h:
        await eventually(lambda: h.plane.events)
        [event] = h.plane.events
        assert event.type is RuntimeEventType.EXECUTOR_STATE_REBUILT and event.node_id is None
        assert str(path) in event.message
        moved = list(path.parent.glob("specs.json.corrupt-*"))
        assert len(moved) == 1 and event.payload["movedTo"] == str(moved[0])
        # Held nothing: the control plane is asked for every spec; they are applied as sent.
        h.push(assigned("n", 7))
        await eventually(lambda: ("n", 7) in h.backend.applied)
        await asyncio.sleep(2 * FAST.heartbeat)
        assert len(h.plane.events) == 1


async def test_a_node_is_reported_only_once_this_process_has_reconciled_it(
    tmp_path: Path,
) -> None:
    """What an agent that just started sees of a node (its unit stopped by `up`'s Ctrl-C, say)
    is about to change: reporting it before the first reconcile flashed the node through
    `error`. Until then the control plane keeps the last observation."""
    backend = ScriptedBackend(gates={"slow": asyncio.Event()})
    slow, quick = assigned("slow"), assigned("quick")
    async with running(tmp_path, backend) as h:
        h.push(slow, quick)
        await eventually(lambda: h.plane.observed(quick.node_id))
        await asyncio.sleep(5 * FAST.report + 5 * FAST.heartbeat)
        assert h.plane.observed(slow.node_id) is None, "reported before it was reconciled"
        backend.gates["slow"].set()
        observed = await eventually(lambda: h.plane.observed(slow.node_id))
        assert observed.revision == 1
