"""Quiet outages: jittered exponential retries, and one log line per change of reachability."""

import asyncio
import dataclasses
import itertools
from pathlib import Path

import httpx
import pytest
import structlog

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.executor.runtime.reachability import JitteredBackoff, Reachability
from nodeplane.executor.runtime.runtime import Intervals
from nodeplane.protocol import RuntimeEvent, RuntimeEventType
from tests.executor.runtime_harness import ScriptedBackend, assigned, eventually, running

# A runtime retrying fast, so an outage of half a second holds dozens of failed calls.
OUTAGE = Intervals(
    heartbeat=0.01,
    reconcile=0.02,
    report=0.01,
    poll_wait=0.02,
    retry=0.005,
    outage_retry_cap=0.02,
    housekeeping=0.01,
)


def test_full_jitter_backoff_doubles_its_bound_up_to_the_cap_and_resets() -> None:
    highest = JitteredBackoff(base=2.0, cap=20.0, rng=lambda: 1.0)
    assert [highest.next_delay() for _ in range(6)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]
    highest.reset()
    assert highest.next_delay() == 2.0

    draws = iter([0.0, 0.5, 0.25])
    jittered = JitteredBackoff(base=2.0, cap=20.0, rng=lambda: next(draws))
    assert [jittered.next_delay() for _ in range(3)] == [0.0, 2.0, 2.0]


def test_a_busy_control_planes_hint_is_the_least_wait_spread_over_twice_its_length() -> None:
    draws = iter([0.5, 0.0, 0.25, 0.5, 1.0, 0.9, 0.1])
    backoff = JitteredBackoff(base=2.0, cap=20.0, rng=lambda: next(draws))
    # The first failure's own delay (0.5 of 2 s) is shorter than the hint: the hint, jittered.
    assert backoff.next_delay(hint=3.0) == 3.0
    assert backoff.next_delay(hint=3.0) == 4.5
    # A longer backoff than the hint stands (1.0 of 8 s, against 3 s spread to 5.7 s).
    assert backoff.next_delay(hint=3.0) == 8.0
    assert backoff.next_delay() == 16.0 * 0.1
    # An hour's hint counts as the cap's 20 s.
    capped = JitteredBackoff(base=2.0, cap=20.0, rng=lambda: 0.5)
    assert capped.next_delay(hint=3600.0) == 30.0


def test_backoff_survives_a_very_long_outage() -> None:
    backoff = JitteredBackoff(base=2.0, cap=20.0, rng=lambda: 1.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert delay == 20.0


def test_one_line_per_change_of_reachability() -> None:
    now = [100.0]
    link = Reachability(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        link.succeeded()  # first contact: nothing to say (the executor logs its registration)
        for _ in range(40):
            link.failed("sync", "ConnectError: connection refused")
            link.failed("poll", "ConnectError: connection refused")
            now[0] += 0.5
        link.succeeded()
        link.succeeded()
        link.failed("poll", "ReadTimeout")
    assert [(r["event"], r["log_level"]) for r in logs] == [
        ("controlplane.unreachable", "warning"),
        ("controlplane.reachable", "info"),
        ("controlplane.unreachable", "warning"),
    ]
    assert logs[0]["error"] == "ConnectError: connection refused" and logs[0]["call"] == "sync"
    assert logs[1]["after_seconds"] == 20.0 and logs[1]["failed_calls"] == 80
    assert link.reachable is False


def test_an_answer_to_a_call_sent_before_the_outage_was_noticed_ends_nothing() -> None:
    """Found in the suite: a control plane shutting down answered a sync it already had 10 ms
    after refusing a poll, and the agent logged unreachable, reachable, unreachable."""
    now = [100.0]
    link = Reachability(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        link.succeeded(started=now[0])
        sync_sent = now[0]
        now[0] += 0.1
        link.failed("poll", "ConnectError: connection refused")
        now[0] += 0.01
        link.succeeded(started=sync_sent)  # the in-flight sync's answer
        now[0] += 5
        link.succeeded(started=now[0] - 0.01)  # a call sent after: the control plane is back
    assert [r["event"] for r in logs] == ["controlplane.unreachable", "controlplane.reachable"]
    assert logs[1]["after_seconds"] == 5.0


def test_first_contact_failing_is_logged_once() -> None:
    link = Reachability()
    with structlog.testing.capture_logs() as logs:
        link.failed("sync", "ConnectError")
        link.failed("sync", "ConnectError")
    assert [r["event"] for r in logs] == ["controlplane.unreachable"]


@pytest.mark.anyio
async def test_an_outage_logs_two_lines_and_loses_no_event(tmp_path: Path) -> None:
    """The runtime's calls all fail for a while: one warning when it starts, one line when it
    ends, however many heartbeats, polls and event reports failed; events wait and get there."""
    intervals = OUTAGE
    backend = ScriptedBackend()
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, backend, intervals) as h:
            h.push(assigned("n"))
            await eventually(lambda: ("n", 1) in backend.applied)
            calls = len(h.plane.syncs)
            h.plane.down = httpx.ConnectError("connection refused")
            backend.events.append(
                RuntimeEvent(type=RuntimeEventType.NODE_SYNC_STALLED, message="while away")
            )
            await asyncio.sleep(0.5)  # dozens of heartbeats at this pace
            assert h.runtime.reachability.reachable is False
            assert h.runtime.reachability.failures >= 10
            h.plane.down = None
            await eventually(lambda: h.plane.events)
            assert [e.message for e in h.plane.events] == ["while away"]
            assert len(h.plane.syncs) > calls
    lines = [r for r in logs if r["log_level"] in ("warning", "error", "info")]
    outage = [r["event"] for r in lines if r["event"].startswith("controlplane.")]
    assert outage == ["controlplane.unreachable", "controlplane.reachable"]
    assert [r for r in lines if r["log_level"] != "info"] == [
        r for r in lines if r["event"] == "controlplane.unreachable"
    ]


@pytest.mark.anyio
async def test_a_busy_control_planes_retry_hint_spaces_the_heartbeats_out(tmp_path: Path) -> None:
    """Refused with `unavailable` and `retryAfterSeconds` (a control plane whose database is
    busy says when to come back), the agent sends its next heartbeat no sooner than the hint,
    however short its own backoff, and at its own cadence again once answered."""
    # The cap longer than the hint, which counts only up to it.
    intervals = dataclasses.replace(OUTAGE, outage_retry_cap=0.5)
    async with running(tmp_path, ScriptedBackend(), intervals) as h:
        await eventually(lambda: h.plane.syncs)
        h.plane.down = ControlPlaneError("unavailable", "the server is busy", retry_after=0.2)
        busy_from = len(h.plane.sync_attempts)
        await asyncio.sleep(0.9)
        h.plane.down = None
        refused = h.plane.sync_attempts[busy_from:]
        # Without the hint, dozens at this pace; with it, one every 0.2 to 0.4 s.
        assert 2 <= len(refused) <= 6, refused
        gaps = [later - earlier for earlier, later in itertools.pairwise(refused)]
        assert min(gaps) >= 0.2, gaps
        answered = len(h.plane.syncs)
        await eventually(lambda: len(h.plane.syncs) > answered + 5)
