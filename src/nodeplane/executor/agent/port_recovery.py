"""Find the ports a node already uses in what was materialized for it, when its ports file is lost.

The adapter renders the node's config files with a unique sentinel number per port; every rendered
line that holds sentinels becomes a pattern (the rest of the line literal), matched against the
lines of the file on disk. A port is recovered only when exactly one value is found for it, so a
node that keeps running keeps its ports (and its config files stay as they are: no restart),
and a port that cannot be found is allocated afresh.
"""

import re
from collections.abc import Mapping, Sequence

from nodeplane.chains.base import ChainAdapter, NodeConfigError, NodeLayout, PortDef, RenderContext
from nodeplane.executor.agent.layout import UnsafePath, inside
from nodeplane.protocol import NodeSpec

# Far above any TCP port, so a sentinel never collides with a real number in the rendered text.
_SENTINEL_BASE = 987_650_000


def _line_pattern(line: str, sentinels: Mapping[str, str]) -> tuple[re.Pattern[str], list[str]]:
    """A regex for `line` with each sentinel as a capture group; the port keys in group order."""
    by_text = {text: key for key, text in sentinels.items()}
    pieces = re.split("(" + "|".join(re.escape(t) for t in by_text) + ")", line)
    regex, keys = "", []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex += re.escape(piece)
        else:
            regex += r"(\d{1,5})"
            keys.append(by_text[piece])
    return re.compile(regex), keys


def recover_ports(
    adapter: ChainAdapter,
    spec: NodeSpec,
    ctx: RenderContext,
    wanted: Sequence[PortDef],
) -> dict[str, int]:
    """Ports of `wanted` that the node's config files on disk already use (pure but for reads).

    `ctx` is the node's render context without ports (layout and binaries matter).
    """
    sentinels = {p.key: str(_SENTINEL_BASE + i) for i, p in enumerate(wanted)}
    probe = RenderContext(
        node_name=ctx.node_name,
        layout=ctx.layout,
        ports={k: int(v) for k, v in sentinels.items()},
        binaries=ctx.binaries,
    )
    try:
        plan = adapter.render(spec, probe)
    except (NodeConfigError, LookupError, ValueError):
        return {}
    found: dict[str, set[int]] = {}
    for file in plan.files:
        on_disk = _read_config(ctx.layout, file.relative_path)
        if on_disk is None:
            continue
        for line in file.content.splitlines():
            if not any(t in line for t in sentinels.values()):
                continue
            pattern, keys = _line_pattern(line, sentinels)
            for disk_line in on_disk:
                match = pattern.fullmatch(disk_line)
                if match is None:
                    continue
                for key, value in zip(keys, match.groups(), strict=True):
                    found.setdefault(key, set()).add(int(value))
    return {
        key: next(iter(values))
        for key, values in found.items()
        if len(values) == 1 and 0 < next(iter(values)) < 65536
    }


def _read_config(layout: NodeLayout, relative: str) -> list[str] | None:
    try:
        return inside(layout.config_dir, relative).read_text().splitlines()
    except (UnsafePath, OSError, UnicodeDecodeError):
        return None
