"""One node's unreadable state file is that node's trouble: moved aside, rebuilt, never fatal.

Real litecoind regtest nodes on the process driver. Each test breaks one node's file the way an
operator (or a crash, or a full disk) would, then runs what the agent runs after a restart.
"""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.protocol import RuntimeEventType
from tests.agent.litecoin_host import LitecoinHost, litecoin_host, next_revision, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.process, pytest.mark.chain]

GARBAGE = {
    "empty": b"",
    "truncated": b'{\n  "node.p2p": 1',
    "random": os.urandom(64),
    "wrong shape": b'["node.rpc", 80]',
}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LitecoinHost]:
    with litecoin_host(tmp_path / "agent") as h:
        yield h


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
async def test_a_garbled_ports_file_is_moved_aside_and_the_ports_recovered(
    host: LitecoinHost, garbage: str
) -> None:
    a, b = host.node("ltc-a"), host.node("ltc-b")
    for node in (a, b):
        await host.backend.apply(node)
    pid_a, pid_b = await host.wait_pid("ltc-a"), await host.wait_pid("ltc-b")
    ports_a, ports_b, conf_a = host.ports("ltc-a"), host.ports("ltc-b"), host.conf("ltc-a")

    ports_file = host.node_dir("ltc-a") / "ports.json"
    ports_file.write_bytes(GARBAGE[garbage])
    host.restart_agent()  # it used to die here, and again on every restart

    await host.backend.observe(a)
    for node in (a, b):
        await host.backend.apply(node)

    # Recovered from litecoin.conf: same ports, same config, the running litecoind untouched.
    assert host.ports("ltc-a") == ports_a
    assert host.conf("ltc-a") == conf_a
    aside = list(host.node_dir("ltc-a").glob("ports.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE[garbage]
    events = [
        e for e in host.backend.drain_events() if e.type is RuntimeEventType.EXECUTOR_STATE_REBUILT
    ]
    assert len(events) == 1 and events[0].node_id == a.node_id
    assert "ports.json" in events[0].message and aside[0].name in events[0].message
    await host.backend.housekeeping()
    assert host.pids("ltc-a") == [pid_a]
    # The other node never noticed.
    assert host.ports("ltc-b") == ports_b and host.pids("ltc-b") == [pid_b]


async def test_lost_ports_that_no_file_names_are_allocated_afresh(host: LitecoinHost) -> None:
    a = host.node("ltc-a")
    await host.backend.apply(a)
    await host.wait_pid("ltc-a")
    before = host.ports("ltc-a")
    (host.node_dir("ltc-a") / "ports.json").write_text("{")
    # The config file lost its p2p line too: that port is unknown, the RPC port is not.
    conf = host.conf("ltc-a")
    (host.node_dir("ltc-a") / "config" / "litecoin.conf").write_text(
        "\n".join(line for line in conf.splitlines() if not line.startswith("port=")) + "\n"
    )
    host.restart_agent()
    await host.backend.apply(a)
    ports = host.ports("ltc-a")
    assert set(ports) == {"node.rpc", "node.p2p", "node.onion"}
    assert ports["node.rpc"] == before["node.rpc"], "the RPC port was recovered"
    assert ports["node.onion"] == before["node.onion"], "the Tor listener's port was recovered"
    assert f"port={ports['node.p2p']}" in host.conf("ltc-a")


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
async def test_a_garbled_supervisor_state_file_stops_no_other_unit(
    host: LitecoinHost, garbage: str
) -> None:
    a, b = host.node("ltc-a"), host.node("ltc-b")
    for node in (a, b):
        await host.backend.apply(node)
    pid_a, pid_b = await host.wait_pid("ltc-a"), await host.wait_pid("ltc-b")

    state_a = host.state_file("ltc-a")
    state_a.write_bytes(GARBAGE[garbage])
    os.kill(pid_b, signal.SIGKILL)

    # The same supervise pass that finds a's file unreadable restarts b within its backoff.
    new_b = await host.wait_pid("ltc-b", other_than=pid_b, within=20)
    assert new_b != pid_b
    aside = list(state_a.parent.glob(f"{state_a.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE[garbage]
    events = [
        e for e in host.backend.drain_events() if e.type is RuntimeEventType.EXECUTOR_STATE_REBUILT
    ]
    assert events and state_a.name in events[0].message
    assert host.pids("ltc-a") == [pid_a], "a's litecoind was neither killed nor duplicated"

    # The next apply installs the unit again and adopts the running process: no duplicate.
    await host.backend.apply(a)
    status = await host.driver.status(state_a.name.removesuffix(".json"))
    assert status.main_pid == pid_a
    for _ in range(5):
        await host.backend.housekeeping()
    assert host.pids("ltc-a") == [pid_a]
    # Adopted means supervised again: killed, it is restarted.
    os.kill(pid_a, signal.SIGKILL)
    await host.wait_pid("ltc-a", other_than=pid_a, within=20)
    log = (host.node_dir("ltc-a") / "logs" / "node.log").read_text(errors="replace")
    assert "Cannot obtain a lock" not in log


async def test_an_unreadable_state_file_of_a_stopped_node_is_rebuilt(host: LitecoinHost) -> None:
    a = host.node("ltc-a", desired_state="stopped")
    await host.backend.apply(a)
    host.state_file("ltc-a").write_text("not json")
    await host.backend.housekeeping()
    await host.backend.apply(a)
    await wait_for(lambda: host.state_file("ltc-a").exists(), what="state file rebuilt")
    assert host.pids("ltc-a") == []


async def test_a_node_stopped_after_its_state_file_was_garbled_leaves_no_process(
    host: LitecoinHost,
) -> None:
    # Found by the randomized fault test: the state file of a running node was lost, and the
    # node was then asked to stop. The unit was installed afresh with no process recorded, so
    # the stop had nothing to stop and litecoind ran on, untracked.
    a = host.node("ltc-a")
    await host.backend.apply(a)
    pid_a = await host.wait_pid("ltc-a")
    host.state_file("ltc-a").write_bytes(GARBAGE["random"])
    host.restart_agent()
    stopped = next_revision(a, desiredState="stopped")
    await host.backend.apply(stopped)  # installs the unit afresh
    await host.backend.apply(stopped)  # the next resync
    await wait_for(lambda: host.pids("ltc-a") == [], what="ltc-a's litecoind stopped")
    assert pid_a not in host.pids("ltc-a")
