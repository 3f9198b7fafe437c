"""What an agent does for nodes that are running and unchanged, counted (issue 8, P5).

An agent re-checks every node each resync (5 s) and observes it each report (10 s). Those passes
find nothing to do almost always, so what they cost is counted here in work, never in time:
listings of the driver's units, state files parsed, scans of /proc. Real litecoind regtest nodes
on the process driver.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.executor.agent import backend, procfs, statefile
from nodeplane.executor.agent.backend import AgentBackend
from nodeplane.executor.agent.driver import unit_name
from nodeplane.executor.agent.process_driver import ProcessDriver, Record
from nodeplane.protocol import AssignedNodeSpec
from tests.agent.litecoin_host import LitecoinHost, litecoin_host

pytestmark = [pytest.mark.anyio, pytest.mark.process, pytest.mark.chain]

NODES = 3


@pytest.fixture
def host(tmp_path: Path) -> Iterator[LitecoinHost]:
    with litecoin_host(tmp_path / "agent") as h:
        yield h


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Count the calls of `owner.name` from now on: the returned list holds the count."""
    count = [0]
    original = getattr(owner, name)

    def counted(*args: object, **kwargs: object) -> object:
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return count


async def running_nodes(host: LitecoinHost) -> list[AssignedNodeSpec]:
    return await running_nodes_of(host, NODES)


async def running_nodes_of(host: LitecoinHost, count: int) -> list[AssignedNodeSpec]:
    nodes = [host.node(f"ltc-{i}") for i in range(count)]
    for node in nodes:
        await host.backend.apply(node)
    for node in nodes:
        await host.wait_pid(node.name)
    return nodes


async def resync(backend: AgentBackend, nodes: list[AssignedNodeSpec]) -> None:
    """One resync pass: every node reconciled side by side, as the runtime's tasks do."""
    await asyncio.gather(*(backend.apply(n) for n in nodes))


async def test_a_resync_pass_lists_units_once_and_reads_nothing_unchanged(
    host: LitecoinHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to list every state file for each node (nodes squared), parse each node's state
    file, and scan /proc for CPU figures nobody reads there."""
    nodes = await running_nodes(host)
    assert isinstance(host.driver, ProcessDriver)
    monkeypatch.setattr(statefile, "RACY_WINDOW_NS", 0)
    await resync(host.backend, nodes)  # the files as the apply left them, read once

    listings = count_calls(monkeypatch, host.driver, "list_units")
    parses = count_calls(monkeypatch, Record, "from_json")
    scans = count_calls(monkeypatch, procfs, "sessions")
    hashes = count_calls(monkeypatch, backend, "digest")
    await asyncio.sleep(1.1)  # an older listing than the one the last apply took
    await resync(host.backend, nodes)
    assert listings == [1]
    assert parses == [0]
    assert scans == [0]
    assert hashes == [0]
    for node in nodes:
        assert len(host.pids(node.name)) == 1


async def test_a_unit_made_by_the_agent_is_listed_at_once(
    host: LitecoinHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared listing never hides a unit this agent just installed: a teardown right after
    the first apply still finds (and removes) the node's unit."""
    monkeypatch.setattr(backend, "UNITS_LISTING_MAX_AGE_S", 3600.0)
    nodes = await running_nodes(host)
    late = host.node("ltc-late")
    await resync(host.backend, nodes)  # a fresh listing, without the late node's unit
    await host.backend.apply(late)
    await host.wait_pid(late.name)
    await host.backend.teardown(late)
    assert host.pids(late.name) == []
    assert unit_name(late.name, "node") not in await host.driver.list_units()


async def test_a_config_file_edited_by_hand_is_still_healed(
    host: LitecoinHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Config files are hashed again only when they changed: an edit in place that keeps the
    size (the file's times still change) is noticed and rewritten by the next resync."""
    monkeypatch.setattr(statefile, "RACY_WINDOW_NS", 0)
    nodes = await running_nodes(host)
    await resync(host.backend, nodes)
    conf = host.node_dir(nodes[0].name) / "config" / "litecoin.conf"
    rendered = conf.read_text()
    edited = rendered.replace("server=1", "server=0")
    assert edited != rendered and len(edited) == len(rendered)
    conf.write_text(edited)
    await resync(host.backend, nodes)
    assert conf.read_text() == rendered
