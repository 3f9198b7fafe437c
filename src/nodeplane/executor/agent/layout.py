"""Where a node lives on the host: `<data_dir>/nodes/<name>/`, and nothing outside it."""

from pathlib import Path

from nodeplane.chains.base import NodeLayout
from nodeplane.protocol import node_name_problem


class UnsafePath(Exception):
    """A name or path that would reach outside the node's own directory."""


def nodes_root(data_dir: Path) -> Path:
    """The directory that holds every node's directory."""
    return data_dir / "nodes"


def node_layout(data_dir: Path, name: str) -> NodeLayout:
    """The layout of node `name`, refusing any name that is not a plain DNS label."""
    if problem := node_name_problem(name):
        raise UnsafePath(f"node name {name!r}: {problem}")
    root = nodes_root(data_dir) / name
    if root.resolve().parent != nodes_root(data_dir).resolve():
        raise UnsafePath(f"node directory {root} is not directly under {nodes_root(data_dir)}")
    return NodeLayout(root=root)


def inside(base: Path, relative: str) -> Path:
    """`base / relative`, refusing absolute paths, `..` and symlinks that lead outside `base`."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts or not relative:
        raise UnsafePath(f"{relative!r} is not a plain relative path")
    target = base / candidate
    if not target.resolve().is_relative_to(base.resolve()):
        raise UnsafePath(f"{relative!r} leads outside {base}")
    return target
