"""The executor's on-disk spec cache: atomic saves, reloads, and how tombstones are merged."""

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog

from nodeplane.executor.runtime.local_state import HeldNode, LocalState
from nodeplane.protocol import AssignedNodeSpec, KnownRevision, NodeSpec

SPEC = NodeSpec.model_validate(
    {
        "chain": "litecoin",
        "network": "regtest",
        "clients": {"node": {"name": "litecoind", "version": "0.21.2.1"}},
    }
)


def assigned(
    node_id: uuid.UUID, revision: int, *, deleted: bool = False, name: str = "ltc-1"
) -> AssignedNodeSpec:
    return AssignedNodeSpec(
        node_id=node_id,
        name=name,
        revision=revision,
        spec=None if deleted and not name else SPEC,
        deleted=deleted,
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "specs.json"
    state = LocalState(path)
    nid = uuid.uuid4()
    state.receive(assigned(nid, 3))
    state.nodes[nid].applied_revision = 3
    state.save()
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(path.parent.glob(".state-*")), "no temporary file is left behind"

    again = LocalState(path)
    again.load()
    assert again.nodes == state.nodes
    assert again.known() == [KnownRevision(node_id=nid, revision=3, deleted=False)]


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "specs.json")
    assert state.load() is None
    assert state.nodes == {}


def _saved_state(path: Path) -> bytes:
    state = LocalState(path)
    state.receive(assigned(uuid.uuid4(), 3))
    state.save()
    return path.read_bytes()


@pytest.mark.parametrize(
    ("corrupt", "why"),
    [
        (lambda good: b"", "empty"),
        (lambda good: b"  \n", "empty"),
        (lambda good: good[: len(good) // 2], "not JSON"),
        (lambda good: bytes(range(256)) * 4, "not text"),
        (lambda good: b"[1, 2]", "no 'nodes' object"),
        (lambda good: b'{"nodes": 7}', "no 'nodes' object"),
    ],
    ids=["emptied", "blank", "truncated", "random-bytes", "a-list", "nodes-not-an-object"],
)
def test_an_unreadable_file_is_moved_aside_and_the_state_starts_empty(
    tmp_path: Path, corrupt: Callable[[bytes], bytes], why: str
) -> None:
    path = tmp_path / "state" / "specs.json"
    bad = corrupt(_saved_state(path))
    path.write_bytes(bad)
    state = LocalState(path)
    with structlog.testing.capture_logs() as logs:
        moved = state.load()
    assert state.nodes == {}
    assert moved is not None and moved.parent == path.parent
    assert moved.name.startswith("specs.json.corrupt-")
    assert moved.read_bytes() == bad, "the unreadable file is kept for a look, not deleted"
    assert not path.exists()
    [record] = [r for r in logs if r["event"] == "state.unreadable"]
    assert record["path"] == str(path) and record["moved_to"] == str(moved)
    assert why in record["error"]

    # The next change writes a fresh file beside the one moved aside.
    state.receive(assigned(uuid.uuid4(), 1))
    assert state.save()
    again = LocalState(path)
    assert again.load() is None and again.nodes == state.nodes
    assert moved.exists()


def test_a_directory_in_place_of_the_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "specs.json"
    path.mkdir()
    state = LocalState(path)
    moved = state.load()
    assert moved is not None and moved.is_dir() and state.nodes == {}


def test_save_writes_only_when_the_content_changed(tmp_path: Path) -> None:
    path = tmp_path / "specs.json"
    state = LocalState(path)
    nid = uuid.uuid4()
    state.receive(assigned(nid, 1))
    assert state.save()
    assert not state.save(), "same content: no write"
    state.nodes[nid].applied_revision = 1
    assert state.save()
    path.unlink()
    assert state.save(), "a file removed behind our back is written again"

    loaded = LocalState(path)
    loaded.load()
    assert loaded.save(), "after a load the first save writes (the file's form is not ours)"
    assert not loaded.save()


def test_newer_spec_replaces_and_tombstone_keeps_name_and_spec(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "specs.json")
    nid = uuid.uuid4()
    state.receive(assigned(nid, 1))
    state.receive(assigned(nid, 2))
    assert state.nodes[nid].assigned.revision == 2

    # A node already gone at the control plane comes back with no name and no spec.
    state.receive(
        AssignedNodeSpec(
            node_id=nid, name="", revision=2, spec=None, deleted=True, retain_data=True
        )
    )
    held = state.nodes[nid]
    assert held.assigned.deleted and held.assigned.retain_data
    assert held.name == "ltc-1" and held.assigned.spec == SPEC
    assert state.known() == [KnownRevision(node_id=nid, revision=2, deleted=True)]


def test_tombstone_for_a_node_never_held_is_ignored(tmp_path: Path) -> None:
    state = LocalState(tmp_path / "specs.json")
    state.receive(
        AssignedNodeSpec(node_id=uuid.uuid4(), name="", revision=4, spec=None, deleted=True)
    )
    assert state.nodes == {}


def test_hostile_name_in_the_file_is_refused_on_load(tmp_path: Path) -> None:
    """The bad entry is dropped (the control plane sends that spec again); the others stay."""
    nid, other = uuid.uuid4(), uuid.uuid4()
    nodes = {
        str(n): HeldNode(assigned=assigned(n, 1, name=name)).model_dump(mode="json", by_alias=True)
        for n, name in ((nid, "ltc-1"), (other, "ltc-2"))
    }
    raw = json.loads(json.dumps({"version": 1, "nodes": nodes}))
    raw["nodes"][str(nid)]["assigned"]["name"] = "../../etc"
    path = tmp_path / "specs.json"
    path.write_text(json.dumps(raw))
    state = LocalState(path)
    state.load()
    assert list(state.nodes) == [other]
    assert state.nodes[other].name == "ltc-2"


def test_an_entry_filed_under_another_id_is_refused(tmp_path: Path) -> None:
    nid = uuid.uuid4()
    held = HeldNode(assigned=assigned(nid, 1)).model_dump(mode="json", by_alias=True)
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({"version": 1, "nodes": {str(uuid.uuid4()): held}}))
    state = LocalState(path)
    state.load()
    assert state.nodes == {}
