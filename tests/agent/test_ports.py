"""Port allocation: stable per node, the client's default first, else a free port."""

import json
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nodeplane.chains.base import TCP_AND_UDP, PortDef
from nodeplane.executor.agent.port_range import PortRange
from nodeplane.executor.agent.ports import (
    DEFAULT_SEARCH,
    NoFreePort,
    allocate_ports,
)

SEARCH_START, SEARCH_END = DEFAULT_SEARCH.first, DEFAULT_SEARCH.last + 1


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port somebody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_default_when_free_and_kept_across_calls(tmp_path: Path, busy_port: int) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    wanted = [PortDef("node", "rpc", default=free)]
    first = allocate_ports(tmp_path / "ports.json", wanted, set())
    assert first == {"node.rpc": free}
    assert json.loads((tmp_path / "ports.json").read_text()) == first
    assert allocate_ports(tmp_path / "ports.json", wanted, set()) == first


def test_a_taken_default_falls_back_to_a_spread_out_free_port(
    tmp_path: Path, busy_port: int
) -> None:
    wanted = [PortDef("node", "rpc", default=busy_port)]
    chosen = {allocate_ports(tmp_path / f"{i}.json", wanted, set())["node.rpc"] for i in range(20)}
    assert all(SEARCH_START <= p < SEARCH_END for p in chosen)
    # Agents sharing a host do not all race for the first free port of the range.
    assert len(chosen) > 1


def test_ports_held_by_other_nodes_are_never_reused(tmp_path: Path, busy_port: int) -> None:
    taken = set(range(SEARCH_START, SEARCH_END - 1))
    wanted = [PortDef("node", "rpc", default=busy_port)]
    assert allocate_ports(tmp_path / "ports.json", wanted, taken) == {"node.rpc": SEARCH_END - 1}


@contextmanager
def _udp_held_port_free_over_tcp() -> Iterator[int]:
    """A port held over UDP and free over TCP. Not an ephemeral one (found in the parallel
    suite: the number the kernel gives a UDP socket may be some process's outgoing TCP port)
    and not in the allocator's search range: a random one below both, checked over TCP."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(12000, 19000)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("0.0.0.0", port))
            except OSError:
                continue
            with socket.socket() as tcp:
                try:
                    tcp.bind(("0.0.0.0", port))
                except OSError:
                    continue
            yield port
            return
    raise AssertionError("no port free over both TCP and UDP in 12000-18999")


def test_a_default_taken_over_udp_is_not_given_to_a_tcp_and_udp_port(tmp_path: Path) -> None:
    """P2P discovery binds UDP on the P2P number: a default free over TCP but held over UDP
    would crash the client at start, so it is passed over; a TCP-only port may still have it."""
    with _udp_held_port_free_over_tcp() as held:
        both = [PortDef("node", "p2p", default=held, public=True, protocols=TCP_AND_UDP)]
        chosen = allocate_ports(tmp_path / "both.json", both, set())["node.p2p"]
        assert chosen != held and SEARCH_START <= chosen < SEARCH_END
        tcp = [PortDef("node", "p2p", default=held, public=True)]
        assert allocate_ports(tmp_path / "tcp.json", tcp, set()) == {"node.p2p": held}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_port_range_confines_new_ports_and_skips_a_default_outside_it(tmp_path: Path) -> None:
    """`[ports] first/last`: a host whose firewall opens only a range gets ports from it alone;
    a client's default (free, but outside) is not used, one inside is."""
    outside = _free_port()
    window = PortRange(24100, 24139)
    assert outside not in window
    # The default inside the range is asked for first: a port picked at random from the range
    # for the other one could otherwise be that very port (one time in forty).
    wanted = [
        PortDef("node", "p2p", default=24120, public=True),
        PortDef("node", "rpc", default=outside),
    ]
    ports = allocate_ports(tmp_path / "ports.json", wanted, set(), port_range=window)
    assert ports["node.rpc"] in window and ports["node.rpc"] != outside
    assert ports["node.p2p"] == 24120


def test_a_narrowed_range_keeps_the_ports_a_node_already_has(tmp_path: Path) -> None:
    had = _free_port()
    wanted = [PortDef("node", "rpc", default=had)]
    allocate_ports(tmp_path / "ports.json", wanted, set())
    window = PortRange(24200, 24209)
    assert allocate_ports(tmp_path / "ports.json", wanted, set(), port_range=window) == {
        "node.rpc": had
    }


def test_a_full_range_is_a_typed_error_naming_the_port_and_the_range(tmp_path: Path) -> None:
    window = PortRange(24300, 24303)
    wanted = [PortDef("node", "rpc", default=8332)]
    with pytest.raises(NoFreePort, match=r"node\.rpc: every port in 24300-24303 is taken"):
        allocate_ports(
            tmp_path / "ports.json", wanted, set(window_ports(window)), port_range=window
        )
    assert not (tmp_path / "ports.json").exists()


def window_ports(window: PortRange) -> range:
    """Every port of `window`."""
    return range(window.first, window.last + 1)
