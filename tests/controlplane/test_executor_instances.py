"""One live agent process per executor: a second instance is refused (typed error, one event per
instance), a restart on the same data directory succeeds its predecessor at once, a silent
instance is replaced after the heartbeat timeout, and of instances claiming at once one wins."""

import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import (
    INSTANCE_HEADER,
    EventLevel,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
)
from tests.support.calls import all_events, deploy, get_node, wait_until
from tests.support.fleet import FakeExecutor, Org
from tests.support.server import ServerProcess

HEARTBEAT_TIMEOUT = 3.0  # ServerProcess's default for tests
CONFLICT = "executor_instance_conflict"


def instance(server: ServerProcess, key: str, name: str | None = None, **kw: Any) -> FakeExecutor:
    """A protocol-level agent process with an instance id of its own."""
    ex = FakeExecutor(server.url, key, instance_id=uuid.uuid4(), **kw)
    if name is not None:
        ex.name = name
    return ex


def refused(call: Any) -> ControlPlaneError:
    with pytest.raises(ControlPlaneError) as err:
        call()
    assert err.value.code == CONFLICT, err.value
    return err.value


def instance_events(org: Org, executor_id: str, kind: str) -> list[dict[str, Any]]:
    return all_events(org.owner, executorId=executor_id, type=f"executor.instance_{kind}")


def test_second_instance_is_refused_until_the_first_is_silent(
    org: Org, server: ServerProcess
) -> None:
    key = org.executor_key()
    first = instance(server, key)
    first.sync()
    assert first.id is not None
    nid = deploy(org.owner, first, "ltc-one")["id"]
    running = ObservedNodeState(
        revision=1, processes=[ObservedProcess(role="node", status=ProcessStatus.RUNNING, pid=11)]
    )
    first.sync({nid: running})
    before = get_node(org.owner, nid)
    assert before["phase"] == "RUNNING"

    # A clone: same key and name, another process. Every call it makes is refused, and what it
    # reports is not taken.
    clone = instance(server, key, first.name)
    empty = ObservedNodeState(
        revision=1, processes=[ObservedProcess(role="node", status=ProcessStatus.STARTING, pid=99)]
    )
    err = refused(lambda: clone.sync({nid: empty}))
    assert str(first.instance_id) in err.message and "last synced at" in err.message
    assert str(clone.instance_id) in err.message
    for _ in range(3):
        # When the live one last synced, taken before sending: the server's record is later.
        last_sync = time.monotonic()
        first.sync({nid: running})  # the live one goes on as before
        refused(lambda: clone.sync({nid: empty}))
    refused(lambda: clone.poll())
    refused(lambda: clone.report(RuntimeEvent(type="executor.disk.low", message="clone")))
    refused(lambda: clone.confirm_teardown(nid))
    after = get_node(org.owner, nid)
    assert (after["observed"], after["phase"]) == (before["observed"], "RUNNING")
    assert all_events(org.owner, executorId=first.id, type="executor.disk.low") == []

    # One event per refused instance, however often it retries; a third process is news.
    events = instance_events(org, first.id, "refused")
    assert [
        (e["level"], e["payload"]["instanceId"], e["payload"]["refusedInstanceId"]) for e in events
    ] == [("WARN", str(first.instance_id), str(clone.instance_id))]
    third = instance(server, key, first.name)
    refused(third.sync)
    refused(third.sync)
    assert len(instance_events(org, first.id, "refused")) == 2

    # The first goes silent: after the heartbeat timeout (not before) the clone takes over.

    def clone_accepted() -> bool:
        try:
            clone.sync()
        except ControlPlaneError as exc:
            assert exc.code == CONFLICT
            return False
        return True

    wait_until(clone_accepted, timeout=HEARTBEAT_TIMEOUT + 5, interval=0.2, what="takeover")
    assert time.monotonic() - last_sync >= HEARTBEAT_TIMEOUT - 0.5, "taken over while live"
    replaced = instance_events(org, first.id, "replaced")
    assert [(e["payload"]["instanceId"], e["payload"]["previousInstanceId"]) for e in replaced] == [
        (str(clone.instance_id), str(first.instance_id))
    ]
    clone.poll()
    # Now the first one is the second instance, and refused (an event again: a new live one).
    refused(first.sync)
    latest = instance_events(org, first.id, "refused")[0]["payload"]
    assert (latest["instanceId"], latest["refusedInstanceId"]) == (
        str(clone.instance_id),
        str(first.instance_id),
    )


def test_a_restart_on_the_same_data_directory_succeeds_at_once(
    org: Org, server: ServerProcess
) -> None:
    key = org.executor_key()
    first = instance(server, key)
    first.sync()
    assert first.id is not None
    # The next process on the same data dir names its predecessors (instance_lock.py).
    restarted = instance(
        server, key, first.name, previous_instance_ids=[uuid.uuid4(), first.instance_id]
    )
    restarted.sync()
    restarted.poll()
    refused(first.sync)
    assert instance_events(org, first.id, "replaced") == []
    assert len(instance_events(org, first.id, "refused")) == 1


def test_a_held_poll_renewed_after_a_takeover_is_refused(org: Org, server: ServerProcess) -> None:
    key = org.executor_key()
    first = instance(server, key)
    first.sync()
    # Renewed polls are answered from what the first one read (nothing changed since): that
    # look must not outlive the instance it was checked against.
    first.poll(wait=0.2)
    first.poll(wait=0.2)
    restarted = instance(server, key, first.name, previous_instance_ids=[first.instance_id])
    restarted.sync()
    refused(lambda: first.poll(wait=0.2))
    restarted.poll(wait=0.2)
    refused(lambda: first.poll(wait=0.2))


def test_agents_without_an_instance_id_are_not_checked(org: Org, server: ServerProcess) -> None:
    key = org.executor_key()
    first = instance(server, key)
    first.sync()
    legacy = FakeExecutor(server.url, key, name=first.name)  # an agent older than the rule
    legacy.sync()
    legacy.poll()
    assert legacy.report(RuntimeEvent(type="executor.disk.low", message="old agent")) == 1
    first.sync()  # the recorded instance is still the first
    refused(instance(server, key, first.name).sync)


def test_a_malformed_instance_header_is_invalid_input(org: Org, server: ServerProcess) -> None:
    key = org.executor_key()
    response = httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ executorSpecs(waitSeconds: 0) { nodeId } }"},
        headers={"authorization": f"Bearer {key}", INSTANCE_HEADER: "not-a-uuid"},
    )
    assert response.json()["errors"][0]["extensions"]["code"] == "invalid_input"


def _race(contenders: list[FakeExecutor]) -> list[FakeExecutor]:
    """All sync at the same moment; the ones accepted."""
    barrier = threading.Barrier(len(contenders))
    winners: list[FakeExecutor] = []
    failures: list[BaseException] = []

    def go(ex: FakeExecutor) -> None:
        barrier.wait()
        try:
            ex.sync()
            winners.append(ex)
        except ControlPlaneError as exc:
            if exc.code != CONFLICT:
                failures.append(exc)
        except BaseException as exc:  # surfaced below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=go, args=(ex,)) for ex in contenders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    return winners


def test_instances_claiming_at_once_give_exactly_one_winner(
    org: Org, server: ServerProcess
) -> None:
    key = org.executor_key()
    legacy = FakeExecutor(server.url, key)
    legacy.sync()  # binds the key to the executor; no instance recorded yet
    assert legacy.id is not None
    contenders = [instance(server, key, legacy.name) for _ in range(8)]
    winners = _race(contenders)
    assert len(winners) == 1
    for loser in contenders:
        if loser is not winners[0]:
            refused(loser.sync)

    # The winner goes silent; once it is past the timeout, a new crowd races to replace it.
    silent_since = time.monotonic()
    wait_until(
        lambda: time.monotonic() - silent_since > HEARTBEAT_TIMEOUT + 0.2,
        timeout=HEARTBEAT_TIMEOUT + 2,
        what="the winner silent",
    )
    crowd = [instance(server, key, legacy.name) for _ in range(8)]
    replacers = _race(crowd)
    assert len(replacers) == 1
    replaced = instance_events(org, legacy.id, "replaced")
    assert [(e["payload"]["instanceId"], e["payload"]["previousInstanceId"]) for e in replaced] == [
        (str(replacers[0].instance_id), str(winners[0].instance_id))
    ]
    assert {e["level"] for e in replaced} == {EventLevel.WARN.value.upper()}
