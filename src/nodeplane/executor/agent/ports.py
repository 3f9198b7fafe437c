"""Host port allocation per node, kept stable across restarts in the node's directory."""

import json
import random
import socket
from collections.abc import Iterable
from pathlib import Path

from nodeplane.chains.base import PortDef

# Where ports are searched when a client's default is taken (below Linux's ephemeral range),
# from a random point: agents sharing a host (a demo next to an installed agent, parallel test
# runs) then rarely race for the same free port between checking it and their client binding it.
SEARCH_START = 20000
SEARCH_END = 32000


def _bindable(port: int, public: bool) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0" if public else "127.0.0.1", port))
        except OSError:
            return False
    return True


def allocate_ports(
    ports_file: Path, wanted: Iterable[PortDef], taken_elsewhere: set[int]
) -> dict[str, int]:
    """Ports for a node: the ones it had, else each client's default, else a free one."""
    current: dict[str, int] = {}
    if ports_file.exists():
        current = {k: int(v) for k, v in json.loads(ports_file.read_text()).items()}
    result: dict[str, int] = {}
    used = set(taken_elsewhere)
    for port in wanted:
        previous = current.get(port.key)
        if previous is not None and previous not in used:
            result[port.key] = previous
            used.add(previous)
            continue
        first = random.randrange(SEARCH_START, SEARCH_END)
        candidates = [port.default, *range(first, SEARCH_END), *range(SEARCH_START, first)]
        chosen = next(p for p in candidates if p not in used and _bindable(p, port.public))
        result[port.key] = chosen
        used.add(chosen)
    if result != current:
        ports_file.parent.mkdir(parents=True, exist_ok=True)
        ports_file.write_text(json.dumps(result, indent=2, sort_keys=True))
    return result


def ports_in_use(nodes_dir: Path, except_node: str) -> set[int]:
    """Every port another node on this host already holds."""
    taken: set[int] = set()
    if not nodes_dir.exists():
        return taken
    for path in nodes_dir.glob("*/ports.json"):
        if path.parent.name == except_node:
            continue
        try:
            taken |= {int(v) for v in json.loads(path.read_text()).values()}
        except (OSError, ValueError):
            continue
    return taken
