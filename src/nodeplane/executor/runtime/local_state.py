"""The specs an executor holds, kept on disk so nodes keep their state without the control plane."""

import json
import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from pydantic import BaseModel, Field

from nodeplane.protocol import AssignedNodeSpec, KnownRevision, NodeSpec

log = structlog.get_logger(__name__)


class HeldNode(BaseModel):
    """One node as the executor holds it: the last spec received and how applying it went."""

    assigned: AssignedNodeSpec
    applied_revision: int = 0
    # The revision that last failed to apply and why; cleared by a successful apply.
    failed_revision: int | None = None
    apply_error: str | None = None
    torn_down: bool = False
    # When `applied_revision` was applied (its health window runs from then), the last revision
    # seen healthy (every process running or syncing), and why `applied_revision` failed its
    # health window, if it did (runtime/health.py).
    applied_at: datetime | None = None
    healthy_revision: int | None = None
    health_error: str | None = None
    # The spec of `applied_revision`: what a new revision is checked against (an edit may not
    # move the node's data to another chain or shrink it; protocol.spec_edit).
    applied_spec: NodeSpec | None = None

    @property
    def name(self) -> str:
        """The node's name."""
        return self.assigned.name


class StateFile(BaseModel):
    """What is written to disk."""

    version: int = 1
    nodes: dict[UUID, HeldNode] = Field(default_factory=dict)


def _entries(raw: bytes) -> dict[str, Any]:
    """The `nodes` object of a state file's bytes; ValueError saying why it is none."""
    if not raw.strip():
        raise ValueError("the file is empty")
    try:
        data = json.loads(raw.decode())
    except UnicodeDecodeError:
        raise ValueError("the file is not text (UTF-8)") from None
    except ValueError as exc:
        raise ValueError(f"the file is not JSON: {exc}") from None
    entries = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ValueError("not a state file (no 'nodes' object)")
    return entries


class LocalState:
    """The held specs, loaded at start and saved atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes: dict[UUID, HeldNode] = {}
        # What the file holds as far as we know (None: unknown, the next save writes).
        self._saved: str | None = None
        self._save_lock = threading.Lock()

    def load(self) -> Path | None:
        """Read the state file if there is one (a missing file is an empty state).

        Each held node is validated on its own, like everything else the executor is given
        (DESIGN §7): an entry that is not a valid spec (a name that is no node name, an override
        with a newline, ...) is refused and dropped, and the control plane sends that node's spec
        again; one bad entry never keeps the executor, and every other node, down.

        A file that cannot be read as a whole (emptied, truncated, random bytes, not a state
        file) is moved aside to `<name>.corrupt-<UTC time>` and the executor starts with no
        held specs: the control plane then sends every spec again, and the nodes, whose
        processes outlive the executor, are adopted as they run. Returns where the file was
        moved (None when nothing was moved aside).
        """
        self.nodes = {}
        self._saved = None
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # a directory in its place, an unreadable disk block, ...
            return self._move_aside(f"cannot read it: {exc}")
        try:
            entries = _entries(raw)
        except ValueError as exc:
            return self._move_aside(str(exc))
        nodes: dict[UUID, HeldNode] = {}
        for key, entry in entries.items():
            try:
                node_id = UUID(key)
                held = HeldNode.model_validate(entry)
                if held.assigned.node_id != node_id:
                    raise ValueError(f"held under {key} but is node {held.assigned.node_id}")
            except ValueError as exc:  # pydantic's ValidationError included
                log.error("state.entry_refused", node_id=key[:64], error=str(exc)[:1000])
                continue
            nodes[node_id] = held
        self.nodes = nodes
        return None

    def _move_aside(self, error: str) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            # Still start: the next save replaces the unreadable file anyway.
            log.error("state.move_aside_failed", path=str(self.path), error=str(exc))
        log.error(
            "state.unreadable",
            path=str(self.path),
            moved_to=str(aside),
            error=error[:1000],
            consequence="starting with no held specs; the control plane sends them again",
        )
        return aside

    def save(self) -> bool:
        """Write atomically if the content changed; True if it wrote.

        A crash leaves either the old file or the new one, never half: the content goes to a
        temporary file of a unique name (two writers never share one), is synced, then renamed
        over the file. Saves are serialized, so concurrent callers (per-node reconcile tasks,
        threads) never interleave and the file always holds one whole, latest state.
        """
        with self._save_lock:
            data = StateFile(nodes=self.nodes).model_dump_json(indent=2)
            if data == self._saved and self.path.exists():
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".json")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._saved = data
            return True

    def known(self) -> list[KnownRevision]:
        """What to tell the spec poll we hold."""
        return [
            KnownRevision(node_id=nid, revision=h.assigned.revision, deleted=h.assigned.deleted)
            for nid, h in self.nodes.items()
        ]

    def receive(self, spec: AssignedNodeSpec) -> None:
        """Take a spec from the control plane; a tombstone keeps the name and spec held before."""
        held = self.nodes.get(spec.node_id)
        if held is None:
            if spec.deleted and spec.spec is None:
                return  # gone before we ever held it: nothing to tear down
            self.nodes[spec.node_id] = HeldNode(assigned=spec)
            return
        if spec.deleted:
            held.assigned = held.assigned.model_copy(
                update={
                    "deleted": True,
                    "retain_data": spec.retain_data,
                    "revision": max(spec.revision, held.assigned.revision),
                }
            )
        else:
            held.assigned = spec
