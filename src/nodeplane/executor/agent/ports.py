"""Host port allocation per node, kept stable across restarts in the node's directory."""

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from nodeplane.chains.base import PortDef
from nodeplane.executor.agent.port_owners import bindable
from nodeplane.executor.agent.port_range import PortRange
from nodeplane.executor.agent.statefile import make_directory, read_text, write_atomic

# Where ports are searched when a client's default is taken: below Linux's ephemeral range.
DEFAULT_SEARCH = PortRange(20000, 31999)


class NoFreePort(Exception):
    """Every candidate port for one of a node's ports is taken."""


class PortsFileError(Exception):
    """A node's ports file exists but does not hold a `{key: port}` object."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: unreadable ports file: {problem}")
        self.path = path


def parse_ports(text: str) -> dict[str, int]:
    """`{key: port}` from a ports file's text; ValueError unless every value is a TCP port."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    ports: dict[str, int] = {}
    for key, value in data.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
            raise ValueError(f"{key!r}: {value!r} is not a port")
        ports[str(key)] = value
    return ports


def read_ports(ports_file: Path) -> dict[str, int] | None:
    """The node's recorded ports; None if it has no ports file, PortsFileError if unreadable."""
    try:
        text = read_text(ports_file)
    except (OSError, UnicodeDecodeError) as exc:
        raise PortsFileError(ports_file, str(exc)) from None
    if text is None:
        return None
    try:
        return parse_ports(text)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise PortsFileError(ports_file, str(exc)) from None


def allocate_ports(
    ports_file: Path,
    wanted: Iterable[PortDef],
    taken_elsewhere: set[int],
    current: Mapping[str, int] | None = None,
    port_range: PortRange | None = None,
) -> dict[str, int]:
    """Ports for a node: the ones it had, else each client's default, else a free one.

    `current` (default: the ports file) is what the node had; the file is written only when its
    content changes. With `port_range` (the agent's `[ports]`, for a host whose firewall opens
    only those) new ports come from that range alone, a client's default only when it lies in it;
    ports a node already has are kept, so narrowing the range never moves a running node.
    Raises NoFreePort when every candidate is taken.
    """
    if current is None:
        current = read_ports(ports_file) or {}
    result: dict[str, int] = {}
    used = set(taken_elsewhere)
    for port in wanted:
        previous = current.get(port.key)
        if previous is not None and previous not in used:
            result[port.key] = previous
            used.add(previous)
            continue
        search = port_range or DEFAULT_SEARCH
        defaults = [port.default] if port_range is None or port.default in port_range else []
        candidates = [*defaults, *search.from_random_point()]
        # Free with every protocol the client binds (P2P: TCP and its UDP discovery).
        chosen = next(
            (p for p in candidates if p not in used and bindable(p, port.public, port.protocols)),
            None,
        )
        if chosen is None:
            where = f"{search}" if port_range else f"{port.default} or {search}"
            raise NoFreePort(f"no free port for {port.key}: every port in {where} is taken")
        result[port.key] = chosen
        used.add(chosen)
    make_directory(ports_file.parent)
    write_atomic(ports_file, ports_text(result))
    return result


def ports_text(ports: Mapping[str, int]) -> str:
    """What a ports file holds for `ports`."""
    return json.dumps(dict(ports), indent=2, sort_keys=True)


def ports_in_use(nodes_dir: Path, except_node: str) -> set[int]:
    """Every port another node on this host already holds."""
    taken: set[int] = set()
    if not nodes_dir.exists():
        return taken
    for path in nodes_dir.glob("*/ports.json"):
        if path.parent.name == except_node:
            continue
        try:
            taken |= set(parse_ports(path.read_text()).values())
        except (OSError, ValueError):
            continue
    return taken
