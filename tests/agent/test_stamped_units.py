"""What was applied is stamped on the unit definition; rendering happens once per revision.

Real litecoind regtest, on the process driver and (where it is about units) a sandboxed systemd.
"""

import asyncio
import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nodeplane.chains.base import ChainAdapter
from nodeplane.executor.agent.driver import Stamp, unit_name
from nodeplane.executor.agent.main import binary_resolver
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from nodeplane.protocol import ProcessStatus
from tests.agent.litecoin_host import LitecoinHost, litecoin_host, next_revision

pytestmark = [pytest.mark.anyio, pytest.mark.process, pytest.mark.chain]

NAME = "ltc-old"
UNIT = unit_name(NAME, "node")


@pytest.fixture(params=["process", "systemd"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LitecoinHost]:
    sandbox = request.getfixturevalue("systemd_sandbox") if request.param == "systemd" else None
    with litecoin_host(tmp_path / "agent", sandbox) as h:
        yield h


@pytest.fixture
def process_host(tmp_path: Path) -> Iterator[LitecoinHost]:
    with litecoin_host(tmp_path / "agent") as h:
        yield h


def as_an_older_agent_left_it(host: LitecoinHost, revision: int, restart_generation: int) -> None:
    """The unit without a stamp and applied.json beside the node, as agents before stamps wrote."""
    definition = host.state_file(NAME)
    if isinstance(host.driver, SystemdDriver):
        assert host.sandbox is not None
        text = definition.read_text()
        definition.write_text(
            "".join(ln for ln in text.splitlines(True) if not ln.startswith("X-Nodeplane-"))
        )
        host.sandbox.systemctl("daemon-reload")
    else:
        record = json.loads(definition.read_text())
        for key in ("revision", "restart_generation", "pending_restart"):
            del record["definition"][key]
        definition.write_text(json.dumps(record, indent=2))
    (host.node_dir(NAME) / "applied.json").write_text(
        json.dumps({"restartGeneration": restart_generation, "revision": revision})
    )


# What crash-loop detection added to every unit: the previous agent version wrote none of it.
NEW_UNIT_LINES = ("StartLimitIntervalSec=", "StartLimitBurst=", "ExecStopPost=")
NEW_STATE_FIELDS = ("stable_after_s",)


def as_the_previous_version_left_it(host: LitecoinHost) -> None:
    """The unit as the agent before crash-loop detection wrote it: stamped, without the lines
    and fields added since, and a config file it rendered differently."""
    definition = host.state_file(NAME)
    if isinstance(host.driver, SystemdDriver):
        assert host.sandbox is not None
        text = definition.read_text()
        definition.write_text(
            "".join(ln for ln in text.splitlines(True) if not ln.startswith(NEW_UNIT_LINES))
        )
        host.sandbox.systemctl("daemon-reload")
    else:
        record = json.loads(definition.read_text())
        for key in NEW_STATE_FIELDS:
            del record["definition"][key]
        definition.write_text(json.dumps(record, indent=2))
    conf = host.node_dir(NAME) / "config" / "litecoin.conf"
    conf.write_text(conf.read_text() + "# rendered by the previous version\n")


async def test_an_upgraded_agent_adopts_running_nodes_without_restarting_them(
    host: LitecoinHost,
) -> None:
    """Same stamp, a definition and a config file the new version renders differently: the new
    ones are installed (they take effect at the next start), nothing is restarted."""
    node = host.node(NAME)
    await host.backend.apply(node)
    pid = await host.wait_pid(NAME)
    main_pid = await host.main_pid(NAME)
    current = (await host.driver.status(UNIT)).definition
    as_the_previous_version_left_it(host)
    old = await host.driver.status(UNIT)
    assert old.stamp == Stamp(revision=1, restart_generation=0)
    assert old.definition != current, "the previous version's definition differs"
    host.restart_agent()  # the new version starts

    for _ in range(3):
        await host.backend.apply(node)
        await host.backend.housekeeping()
    assert host.pids(NAME) == [pid] and await host.main_pid(NAME) == main_pid
    adopted = await host.driver.status(UNIT)
    assert adopted.definition == current, "the new definition is installed"
    assert adopted.stamp == Stamp(revision=1, restart_generation=0)
    assert "previous version" not in host.conf(NAME), "the config file is rendered again"

    # The new definition holds for the running process: its exit is written to its log
    # (systemd's ExecStopPost= of the reloaded unit; the supervisor's own line, which cannot
    # know the exit status of a process a previous agent started).
    log_file = host.node_dir(NAME) / "logs" / "node.log"
    os.kill(pid, signal.SIGKILL)
    systemd = isinstance(host.driver, SystemdDriver)
    line = (
        "nodeplane: exit result=signal code=killed status=KILL" if systemd else "nodeplane: exit "
    )
    deadline = time.monotonic() + 30
    while line not in log_file.read_text():
        assert time.monotonic() < deadline, "no exit line"
        await host.backend.housekeeping()  # the process driver notices exits here
        await asyncio.sleep(0.1)


async def test_a_node_an_older_agent_started_is_adopted_without_a_restart(
    host: LitecoinHost,
) -> None:
    node = host.node(NAME)
    await host.backend.apply(node)
    pid = await host.wait_pid(NAME)
    main_pid = await host.main_pid(NAME)
    assert (await host.driver.status(UNIT)).stamp == Stamp(revision=1, restart_generation=0)

    as_an_older_agent_left_it(host, revision=1, restart_generation=0)
    assert (await host.driver.status(UNIT)).stamp is None
    host.restart_agent()  # the new version starts

    for _ in range(3):
        await host.backend.apply(node)
        await host.backend.housekeeping()
    assert host.pids(NAME) == [pid] and await host.main_pid(NAME) == main_pid
    assert (await host.driver.status(UNIT)).stamp == Stamp(revision=1, restart_generation=0)
    assert not (host.node_dir(NAME) / "applied.json").exists(), "read once, then not needed"

    # A restart asked for later is done, once.
    restart = next_revision(node, restartGeneration=1)
    await host.backend.apply(restart)
    new_pid = await host.wait_pid(NAME, other_than=pid)
    await host.backend.apply(restart)
    assert host.pids(NAME) == [new_pid]
    assert (await host.driver.status(UNIT)).stamp == Stamp(revision=2, restart_generation=1)


async def test_a_restart_an_older_agent_had_not_done_yet_is_done(host: LitecoinHost) -> None:
    node = host.node(NAME)
    await host.backend.apply(node)
    pid = await host.wait_pid(NAME)
    # It had received revision 2 (a restart) but died before applying it.
    as_an_older_agent_left_it(host, revision=1, restart_generation=0)
    host.restart_agent()
    await host.backend.apply(next_revision(node, restartGeneration=1))
    await host.wait_pid(NAME, other_than=pid)


async def test_a_restart_interrupted_after_its_pending_stamp_is_done_by_the_next_agent(
    process_host: LitecoinHost,
) -> None:
    host = process_host
    node = host.node(NAME)
    await host.backend.apply(node)
    pid = await host.wait_pid(NAME)
    restart = next_revision(node, restartGeneration=1)
    # What an agent killed right after announcing the restart leaves: the pending stamp.
    rendering = host.backend._rendering(restart)
    unit = rendering.units[UNIT]
    pending = Stamp(revision=2, restart_generation=1, pending_restart=True)
    await host.driver.install(dataclasses.replace(unit, stamp=pending))
    host.restart_agent()
    await host.backend.apply(restart)
    await host.wait_pid(NAME, other_than=pid)
    assert (await host.driver.status(UNIT)).stamp == Stamp(revision=2, restart_generation=1)


async def test_ports_and_binaries_are_resolved_once_per_revision_never_on_report(
    process_host: LitecoinHost,
) -> None:
    host = process_host
    calls: list[str] = []

    def counting(resolve: Callable[[ChainAdapter, str, str, str], Path]) -> None:
        def counted(adapter: ChainAdapter, role: str, client: str, version: str) -> Path:
            calls.append(role)
            return resolve(adapter, role, client, version)

        host.backend._resolve_binary = counted

    counting(binary_resolver(host.data_dir))
    node = host.node(NAME)
    for _ in range(3):
        await host.backend.apply(node)
        await host.backend.observe(node)
    assert calls == ["node"]
    pid = await host.wait_pid(NAME)
    ports = host.ports(NAME)

    # A restarted agent reports before its first apply: from the driver alone, nothing rendered.
    (host.node_dir(NAME) / "ports.json").unlink()
    host.restart_agent()
    calls.clear()
    counting(binary_resolver(host.data_dir))
    observed = await host.backend.observe(node)
    assert [(p.role, p.pid) for p in observed] == [("node", pid)]
    assert observed[0].status is ProcessStatus.RUNNING
    assert calls == [] and not (host.node_dir(NAME) / "ports.json").exists()

    # The next apply renders once, finds the ports in litecoin.conf, and restarts nothing.
    await host.backend.apply(node)
    await host.backend.apply(node)
    assert calls == ["node"]
    assert host.ports(NAME) == ports and host.pids(NAME) == [pid]
    # Probes use what was rendered: the node reports its chain now.
    await host.wait_rpc(NAME)
    calls.clear()
    await host.backend.observe(node)
    assert calls == []


async def test_a_crashed_node_stays_down_until_a_new_revision(process_host: LitecoinHost) -> None:
    host = process_host
    node = host.node(NAME, agent={"restartPolicy": "no"})
    await host.backend.apply(node)
    pid = await host.wait_pid(NAME)
    os.kill(pid, signal.SIGKILL)
    host.restart_agent()  # what it knew in memory is gone; the stamp is not
    for _ in range(3):
        await host.backend.housekeeping()
        await host.backend.apply(node)
    assert host.pids(NAME) == []
    assert isinstance(host.driver, ProcessDriver)
    await host.backend.apply(next_revision(node))
    await host.wait_pid(NAME)
