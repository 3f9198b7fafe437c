"""A randomized fault test (issue 12): five litecoin regtest nodes under random lifecycle actions,
deletes and re-creations, interleaved with kill -9 of the agent, of the nodes' litecoind
processes and of the control plane, and with corrupted state files.

Real parts throughout: a control-plane process (SQLite, and PostgreSQL), a real agent on the
process driver, real litecoind regtest nodes, actions through the GraphQL API with
`expectedRevision`.

Reproducible from its seed: each run prints `NODEPLANE_FAULT_SEED=<seed>` and every failure
carries it; setting it replays the same sequence of decisions (timing on a busy host may still
differ). `NODEPLANE_FAULT_SECONDS` sets how long faults are injected (default 60 s). The run's
timeline (every action, fault and violation, with times) is written to
`test-artifacts/fault-test-<backend>-<seed>.log`.

While it runs: no node ever has two litecoind at once, and neither the agent nor the control
plane dies other than by our kill -9. Once the faults stop and a quiet period converged:
- every node is in the state last asked (phase RUNNING or STOPPED at its current revision), with
  exactly one litecoind per running node and none for stopped or deleted ones, counted in /proc;
- what the control plane acknowledged survived its kill -9 (desired states as last asked);
- heights never went backwards (getblockcount sampled all along; mined blocks are flushed at
  once, so a kill -9 of litecoind cannot lose them; a node whose data was deleted is a new node,
  one re-created over kept data continues its height);
- every phase the API showed (polled every 0.2 s) is in that node's `node.lifecycle.transition`
  chain in the events feed, in order, and that chain has no gaps.
"""

import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import _cleanup_units, _online, wait_for
from tests.e2e.litecoin_nodes import (
    executor_id,
    feed,
    litecoin_spec,
    lock_failures,
    node_pids,
    rpc,
    single_pid,
)
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, LIFECYCLE, Org, make_org
from tests.support.gql import Client, GraphQLError
from tests.support.sandbox import SystemdSandbox
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
)

SECONDS_ENV = "NODEPLANE_FAULT_SECONDS"
SEED_ENV = "NODEPLANE_FAULT_SEED"
FAULT_SECONDS = float(os.environ.get(SECONDS_ENV, "60"))
NODE_COUNT = 5
# A client killed again and again backs off up to 60 s before its next restart (the process
# driver's max backoff), and the agent may come back just before the quiet period.
CONVERGE_SECONDS = 240.0
STABLE_SECONDS = 4.0
PHASE_POLL_S = 0.2
SAMPLE_S = 1.0
TRANSITION = "node.lifecycle.transition"

# Fault kinds drawn at random, with their weights.
FAULTS: dict[str, int] = {
    "lifecycle": 30,  # start, stop or restart a node (expectedRevision: its current revision)
    "stale_write": 3,  # a lifecycle action with an outdated expectedRevision: refused, no change
    "mine": 10,  # mine 1-3 blocks on a running node (and flush them to disk)
    "delete": 4,  # delete a node, keeping its data or not
    "recreate": 8,  # create a node again under the name of one whose removal was confirmed
    "kill_client": 8,  # kill -9 a node's litecoind
    "kill_agent": 6,  # kill -9 the agent; it is started again 0-5 s later
    "kill_control_plane": 4,  # kill -9 the control plane; started again 0-8 s later, same db
    "corrupt_specs_json": 4,  # the agent killed, specs.json emptied/truncated/garbled, restarted
    "corrupt_ports_json": 3,  # a node's ports.json garbled under the running agent
    "corrupt_unit_state": 3,  # a unit's supervisor state file garbled under the running agent
}
# Fault kinds left out of a run (a comma-separated list), to narrow down a failure.
DISABLE_ENV = "NODEPLANE_FAULT_DISABLE"

DELETE_NODE = """
mutation($id: UUID!, $r: Boolean!) { deleteNode(nodeId: $id, retainData: $r) { id phase } }"""
NODE_STATE = """
query($id: UUID!) { node(id: $id) { id name phase desiredState revision observedRevision } }"""
ALL_PHASES = "{ nodes(first: 50) { items { id phase } } }"


def enabled_faults() -> dict[str, int]:
    """The fault kinds this run draws from, with their weights."""
    left_out = {k.strip() for k in os.environ.get(DISABLE_ENV, "").split(",") if k.strip()}
    unknown = left_out - FAULTS.keys()
    assert not unknown, f"{DISABLE_ENV}: unknown fault kinds {sorted(unknown)}"
    return {k: w for k, w in FAULTS.items() if k not in left_out}


def corrupt(rng: random.Random, good: bytes) -> tuple[str, bytes]:
    """A garbled version of a state file's bytes, and how it was garbled."""
    how = rng.choice(["emptied", "truncated", "random bytes"])
    if how == "emptied":
        return how, b""
    if how == "truncated":
        return how, good[: rng.randrange(max(len(good), 1))]
    return how, rng.randbytes(max(len(good), 16))


# ---- what the test asked for -------------------------------------------------------------------


@dataclass
class Slot:
    """One node name and the node that holds it now (a name outlives deletes: it is re-created)."""

    name: str
    node_id: str | None = None
    desired: str = "RUNNING"
    # The acknowledged outcome of the last write is known (False after a request whose answer
    # was lost: then the control plane's word is taken).
    certain: bool = True
    deleting: list[str] = field(default_factory=list)  # ids deleted, removal not yet seen
    # Whose data this node runs on: its own id, or (re-created over kept data) its predecessor's.
    lineage: str | None = None
    kept_lineage: str | None = None  # the data a delete with retainData left behind
    generation: int = 0  # bumped by every delete and create: samples across one are discarded


@dataclass
class HeightSample:
    """One getblockcount answer: when (seconds into the run), from which node."""

    at: float
    node_id: str
    height: int


class FaultRun:
    """The control plane, the agent, the nodes and what was observed of them during one run."""

    def __init__(
        self,
        *,
        seed: int,
        server: ServerProcess,
        org: Org,
        agent: AgentProcess,
        timeline_path: Path,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.server = server
        self.org = org
        self.agent = agent
        self.slots = [Slot(f"n{i}") for i in range(NODE_COUNT)]
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.timeline_path = timeline_path
        self._timeline = timeline_path.open("w")
        self.violations: list[str] = []
        self.agent_restart_at: float | None = None  # set while the agent is down on purpose
        self.server_restart_at: float | None = None
        # What was seen all along: phases per node id, heights per data lineage.
        self.phases: dict[str, list[str]] = {}
        self.heights: dict[str, list[HeightSample]] = {}
        self.durable: dict[str, int] = {}  # lineage -> height flushed to disk
        self.lineage_of: dict[str, str] = {}  # node id -> lineage
        self.node_names: dict[str, str] = {}  # every node id ever created -> its name
        self.descriptor: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- the timeline ---------------------------------------------------------------------

    def note(self, text: str) -> None:
        """One line of the timeline, stamped with the seconds since the start."""
        with self.lock:
            self._timeline.write(f"{time.monotonic() - self.started:8.2f} {text}\n")
            self._timeline.flush()

    def violation(self, text: str) -> None:
        """Something that must never happen, seen during the run (checked at the end)."""
        self.note(f"VIOLATION {text}")
        with self.lock:
            self.violations.append(text)

    def close(self) -> None:
        self._timeline.close()

    # ---- state of the parts ---------------------------------------------------------------

    @property
    def plane_up(self) -> bool:
        return self.server.process is not None

    @property
    def agent_up(self) -> bool:
        return self.agent_restart_at is None

    def agent_alive(self) -> bool:
        """Whether the agent's process runs."""
        if self.agent.driver == "systemd":
            assert self.agent.sandbox is not None
            out = self.agent.sandbox.systemctl("is-active", self.agent.unit, check=False)
            return out.stdout.strip() in ("active", "activating", "deactivating")
        return self.agent.popen is not None and self.agent.popen.poll() is None

    def tend(self, *, everything: bool = False) -> None:
        """Start what is due to come back (all of it if `everything`); note any part that died
        by itself, and start it again so the run goes on."""
        now = time.monotonic()
        if self.server_restart_at is not None and (everything or now >= self.server_restart_at):
            self.server.start()
            self.server_restart_at = None
            self.note("control plane started again")
        elif self.plane_up:
            assert self.server.process is not None
            if (code := self.server.process.poll()) is not None:
                self.violation(f"the control plane exited by itself ({code})")
                self.server.process = None
                self.server.start()
        if self.agent_restart_at is not None:
            if everything or now >= self.agent_restart_at:
                self.agent.start()
                self.agent_restart_at = None
                self.note("agent started again")
        elif not self.agent_alive():
            self.violation(f"the agent exited by itself; see {self.agent.log_path}")
            self.agent.popen = None
            self.agent.start()

    # ---- watchers ---------------------------------------------------------------------------

    def start_watchers(self) -> None:
        for target in (self._poll_phases, self._sample_nodes):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_watchers(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _poll_phases(self) -> None:
        """Every phase the API shows, per node, as the sequence of distinct phases."""
        while not self._stop.wait(PHASE_POLL_S):
            try:
                items = self.org.owner(ALL_PHASES, timeout=5)["nodes"]["items"]
            except Exception:  # the control plane is down, or restarting
                continue
            with self.lock:
                for item in items:
                    seen = self.phases.setdefault(item["id"], [])
                    if not seen or seen[-1] != item["phase"]:
                        seen.append(item["phase"])

    def _sample_nodes(self) -> None:
        """Litecoind processes per node from /proc, and each running node's height over RPC."""
        while not self._stop.wait(SAMPLE_S):
            with self.lock:
                live = [(s.name, s.node_id, s.lineage, s.generation) for s in self.slots]
            for name, node_id, lineage, generation in live:
                pids = node_pids(self.agent, name)
                if len(pids) > 1:
                    self.violation(f"{name}: {len(pids)} litecoind at once: {pids}")
                if node_id is None or lineage is None or len(pids) != 1:
                    continue
                try:
                    height = int(rpc(self.agent, name, "getblockcount", timeout=2))
                except Exception:  # starting, stopping, files being rewritten
                    continue
                with self.lock:
                    slot = next(s for s in self.slots if s.name == name)
                    if slot.generation != generation:
                        continue  # deleted or re-created meanwhile: not this node's height
                    self.heights.setdefault(lineage, []).append(
                        HeightSample(time.monotonic() - self.started, node_id, height)
                    )

    # ---- actions ----------------------------------------------------------------------------

    def act(self, kind: str) -> None:
        """Perform one fault or action of `kind` (skipped when it does not apply now)."""
        action: Callable[[], str | None] = getattr(self, f"_{kind}")
        try:
            outcome = action()
        except GraphQLError as exc:
            raise AssertionError(f"{kind}: the API refused: {exc.code}: {exc}") from exc
        if outcome is not None:
            self.note(f"{kind}: {outcome}")

    def _api(self, query: str, variables: dict[str, Any]) -> Any:
        return self.org.owner(query, variables, timeout=10)

    def _live(self, predicate: Callable[[Slot], bool] = lambda s: True) -> list[Slot]:
        return [s for s in self.slots if s.node_id is not None and predicate(s)]

    def create(self, slot: Slot, desired: str) -> None:
        """Create the slot's node (running or stopped), over the data a delete kept, if any."""
        spec = litecoin_spec(desiredState=desired.lower())
        created = self._api(
            CREATE_NODE,
            {
                "input": {
                    "executorId": executor_id(self.org, self.agent),
                    "name": slot.name,
                    "spec": spec,
                }
            },
        )["createNode"]
        node_id: str = created["id"]
        with self.lock:
            slot.node_id, slot.desired, slot.certain = node_id, desired, True
            slot.lineage = slot.kept_lineage or node_id
            slot.kept_lineage = None
            slot.generation += 1
            self.lineage_of[node_id] = slot.lineage
            self.node_names[node_id] = slot.name
            self.phases.setdefault(node_id, [])
        self.note(f"created {slot.name} {node_id} {desired} (data of {slot.lineage})")

    def _lifecycle(self) -> str | None:
        if not self.plane_up:
            return None
        slots = self._live()
        if not slots:
            return None
        slot = self.rng.choice(slots)
        assert slot.node_id is not None
        current = self._api(NODE_STATE, {"id": slot.node_id})["node"]
        if slot.desired == "RUNNING":
            action = self.rng.choice(["STOP", "RESTART", "RESTART"])
        else:
            action = "START"
        if self.rng.random() < 0.1:  # now and then, ask for what it already is: a no-op
            action = "START" if slot.desired == "RUNNING" else "STOP"
        try:
            answer = self._api(
                LIFECYCLE,
                {"id": slot.node_id, "action": action, "expected": current["revision"]},
            )["requestNodeLifecycleAction"]
        except GraphQLError:
            raise
        except Exception as exc:  # the answer was lost: the control plane's word is taken later
            slot.certain = False
            return f"{slot.name} {action}: no answer ({type(exc).__name__})"
        noop = (action == "START") == (slot.desired == "RUNNING")
        if noop:
            assert answer["revision"] == current["revision"], f"{action} of {slot.name}: {answer}"
        else:
            assert answer["revision"] == current["revision"] + 1, f"{slot.name}: {answer}"
        slot.desired = "STOPPED" if action == "STOP" else "RUNNING"
        slot.certain = True
        return f"{slot.name} {action} -> revision {answer['revision']}{' (no-op)' if noop else ''}"

    def _stale_write(self) -> str | None:
        if not self.plane_up:
            return None
        slots = self._live()
        if not slots:
            return None
        slot = self.rng.choice(slots)
        assert slot.node_id is not None
        current = self._api(NODE_STATE, {"id": slot.node_id})["node"]
        if current["revision"] < 2:
            return None
        action = "STOP" if slot.desired == "RUNNING" else "START"
        with pytest.raises(GraphQLError) as refused:
            self._api(
                LIFECYCLE,
                {"id": slot.node_id, "action": action, "expected": current["revision"] - 1},
            )
        assert refused.value.code == "revision_conflict", refused.value
        after = self._api(NODE_STATE, {"id": slot.node_id})["node"]
        assert after["revision"] == current["revision"], (current, after)
        return f"{slot.name} {action} at revision {current['revision'] - 1}: refused"

    def _mine(self) -> str | None:
        slots = [s for s in self._live(lambda s: s.desired == "RUNNING")]
        slots = [s for s in slots if len(node_pids(self.agent, s.name)) == 1]
        if not slots:
            return None
        slot = self.rng.choice(slots)
        blocks = self.rng.randint(1, 3)
        try:
            if self.descriptor is None:
                self.descriptor = rpc(self.agent, slot.name, "getdescriptorinfo", "raw(51)")[
                    "descriptor"
                ]
            rpc(self.agent, slot.name, "generatetodescriptor", blocks, self.descriptor, timeout=30)
            # litecoind writes its block index only now and then: a kill -9 would lose blocks
            # that were never flushed (litecoind's own behaviour). gettxoutsetinfo flushes.
            rpc(self.agent, slot.name, "gettxoutsetinfo", timeout=30)
            height = int(rpc(self.agent, slot.name, "getblockcount"))
        except Exception as exc:  # stopping or restarting under us: a graceful stop flushes
            return f"{slot.name}: not mined ({exc})"
        with self.lock:
            if slot.lineage is not None:
                lineage = slot.lineage
                self.durable[lineage] = max(self.durable.get(lineage, 0), height)
        return f"{slot.name} +{blocks} -> height {height}"

    def _delete(self) -> str | None:
        if not self.plane_up:
            return None
        slots = self._live()
        if not slots:
            return None
        slot = self.rng.choice(slots)
        node_id = slot.node_id
        assert node_id is not None
        retain = self.rng.random() < 0.4
        with self.lock:
            slot.generation += 1
            slot.deleting.append(node_id)
            slot.node_id = None
            slot.kept_lineage = slot.lineage if retain else None
            slot.lineage = None
        self._api(DELETE_NODE, {"id": node_id, "r": retain})
        return f"{slot.name} {node_id} deleted ({'keeping' if retain else 'removing'} data)"

    def _recreate(self) -> str | None:
        if not self.plane_up:
            return None
        empty = [s for s in self.slots if s.node_id is None]
        if not empty:
            return None
        slot = self.rng.choice(empty)
        # The name is free again once the executor confirmed the teardown (the row is gone).
        if any(self._api(NODE_STATE, {"id": old})["node"] is not None for old in slot.deleting):
            return None
        self.create(slot, "RUNNING" if self.rng.random() < 0.8 else "STOPPED")
        return None

    def _kill_client(self) -> str | None:
        candidates = [(s, node_pids(self.agent, s.name)) for s in self.slots]
        candidates = [(s, pids) for s, pids in candidates if pids]
        if not candidates:
            return None
        slot, pids = self.rng.choice(candidates)
        pid = self.rng.choice(pids)
        with contextlib.suppress(ProcessLookupError):
            if self.agent.sandbox is not None:
                unit = f"nodeplane-{slot.name}-node.service"
                self.agent.sandbox.systemctl("kill", "--signal=SIGKILL", unit, check=False)
            else:
                os.kill(pid, signal.SIGKILL)
        return f"{slot.name} litecoind {pid} killed"

    def _kill_agent(self) -> str | None:
        if not self.agent_up:
            return None
        self.agent.kill()
        self.agent_restart_at = time.monotonic() + self.rng.uniform(0, 5)
        return "agent killed"

    def _kill_control_plane(self) -> str | None:
        if not self.plane_up:
            return None
        self.server.kill()
        self.server_restart_at = time.monotonic() + self.rng.uniform(0, 8)
        return "control plane killed"

    def _corrupt_specs_json(self) -> str | None:
        path = self.agent.data_dir / "state" / "specs.json"
        if self.agent_up:
            self.agent.kill()
        if not path.exists():
            how = "absent"
        else:
            how, garbled = corrupt(self.rng, path.read_bytes())
            path.write_bytes(garbled)
        restart_at = time.monotonic() + self.rng.uniform(0, 2)
        self.agent_restart_at = max(self.agent_restart_at or 0, restart_at)
        return f"agent killed, specs.json {how}"

    def _corrupt_ports_json(self) -> str | None:
        return self._corrupt_one(lambda name: self.agent.node_dir(name) / "ports.json")

    def _corrupt_unit_state(self) -> str | None:
        if self.agent.driver != "process":
            return None
        supervisor = self.agent.data_dir / "supervisor"
        return self._corrupt_one(lambda name: supervisor / f"nodeplane-{name}-node.service.json")

    def _corrupt_one(self, path_of: Callable[[str], Path]) -> str | None:
        paths = [path_of(s.name) for s in self.slots if path_of(s.name).exists()]
        if not paths:
            return None
        path = self.rng.choice(paths)
        with contextlib.suppress(FileNotFoundError):
            how, garbled = corrupt(self.rng, path.read_bytes())
            path.write_bytes(garbled)
            return f"{path.relative_to(self.agent.data_dir)} {how}"
        return None

    # ---- the checks afterwards --------------------------------------------------------------

    def settle_desired(self) -> None:
        """Where a write's answer was lost, what the control plane holds is what was asked."""
        for slot in self._live(lambda s: not s.certain):
            assert slot.node_id is not None
            node = self._api(NODE_STATE, {"id": slot.node_id})["node"]
            slot.desired, slot.certain = node["desiredState"], True
            self.note(f"{slot.name}: desired state after a lost answer: {slot.desired}")

    def problems(self) -> list[str]:
        """What still differs from the desired state (empty: converged)."""
        found = []
        for slot in self.slots:
            for old in slot.deleting:
                if self._api(NODE_STATE, {"id": old})["node"] is not None:
                    found.append(f"{slot.name}: deleted node {old} not removed yet")
            pids = node_pids(self.agent, slot.name)
            if slot.node_id is None:
                if pids:
                    found.append(f"{slot.name}: deleted, but litecoind {pids} runs")
                continue
            node = self._api(NODE_STATE, {"id": slot.node_id})["node"]
            if node is None:
                found.append(f"{slot.name}: {slot.node_id} is gone from the API")
                continue
            if node["desiredState"] != slot.desired:
                found.append(f"{slot.name}: desired {node['desiredState']}, asked {slot.desired}")
            if node["phase"] != slot.desired or node["observedRevision"] != node["revision"]:
                found.append(
                    f"{slot.name}: {node['phase']} at observed revision "
                    f"{node['observedRevision']} of {node['revision']}, want {slot.desired}"
                )
            want = 1 if slot.desired == "RUNNING" else 0
            if len(pids) != want:
                found.append(f"{slot.name}: {len(pids)} litecoind {pids}, want {want}")
            elif want:
                try:
                    main_pid = self.agent.main_pid(slot.name)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    found.append(f"{slot.name}: the unit's state unreadable: {exc!r}"[:300])
                    continue
                if main_pid != pids[0]:
                    found.append(f"{slot.name}: driver says {main_pid}, litecoind {pids}")
        return found

    def check_converged(self) -> None:
        """The quiet period: wait until nothing differs, then hold it for a few seconds."""
        try:
            wait_for(
                lambda: self.problems() == [],
                timeout=CONVERGE_SECONDS,
                what="every node in its desired state",
                interval=1.0,
            )
        except AssertionError:
            problems = self.problems()
            raise AssertionError(
                f"not converged within {CONVERGE_SECONDS:g}s: {problems}\n{self.diagnose()}"
            ) from None
        running = {s.name: single_pid(self.agent, s.name) for s in self._live(_running)}
        deadline = time.monotonic() + STABLE_SECONDS
        while time.monotonic() < deadline:
            assert self.problems() == []
            assert {s.name: single_pid(self.agent, s.name) for s in self._live(_running)} == (
                running
            ), "a converged node was restarted"
            time.sleep(0.5)
        for slot in self.slots:
            assert lock_failures(self.agent, slot.name) == 0, (
                f"{slot.name}: a second litecoind tried to start on the same data"
            )

    def diagnose(self) -> str:
        """What the agent and each node's client said last, for a failure message."""
        lines = []
        for slot in self.slots:
            unit = self.agent.data_dir / "supervisor" / f"nodeplane-{slot.name}-node.service.json"
            if unit.exists():
                text = unit.read_text(errors="replace")
                try:
                    state = repr(json.loads(text)["runtime"])
                except (ValueError, KeyError, TypeError):
                    state = f"unreadable: {text[:120]!r}"
                lines.append(f"--- {slot.name} unit state: {state}")
            log = self.agent.node_dir(slot.name) / "logs" / "node.log"
            if log.exists():
                text = log.read_text(errors="replace").splitlines()
                errors = [line for line in text if "rror" in line][-4:]
                lines += [f"--- {slot.name} node.log errors", *errors]
        if self.agent.log_path.exists():
            tail = self.agent.log_path.read_text(errors="replace").splitlines()[-15:]
            lines += ["--- agent.log", *(line[:400] for line in tail)]
        return "\n".join(lines)

    def check_heights(self) -> None:
        """Per data lineage, sampled heights never went backwards; running nodes kept every
        block that was flushed."""
        assert self.heights, "no height was ever sampled: the check would prove nothing"
        for lineage, samples in self.heights.items():
            for before, after in itertools.pairwise(samples):
                assert after.height >= before.height, (
                    f"height went backwards on the data of {lineage}: {before} then {after}"
                )
        for slot in self._live(_running):
            assert slot.lineage is not None
            height = int(rpc(self.agent, slot.name, "getblockcount"))
            floor = self.durable.get(slot.lineage, 0)
            assert height >= floor, f"{slot.name}: height {height}, {floor} was mined and flushed"
        mined = sum(self.durable.values())
        self.note(f"heights: {len(self.heights)} lineages sampled, {mined} blocks flushed")

    def check_transitions(self) -> None:
        """Every phase the API showed is in the feed's transition chain of the node, in order."""
        assert set(self.phases) == set(self.node_names), "a node the API never showed"
        for node_id, shown in self.phases.items():
            assert shown, f"{node_id}: the API never showed a phase of it"
            events = feed(self.org, nodeId=node_id, type=TRANSITION)
            steps = [(e["payload"]["from"].upper(), e["payload"]["to"].upper()) for e in events]
            name = self.node_names.get(node_id, node_id)
            chain = ["PROVISIONING"] + [to for _, to in steps]
            for i, (before, _) in enumerate(steps):
                assert before == chain[i], (
                    f"{name} ({node_id}): the feed's transitions have a gap: {steps}"
                )
            position = 0
            for phase in shown:
                while position < len(chain) and chain[position] != phase:
                    position += 1
                assert position < len(chain), (
                    f"{name} ({node_id}): the API showed {shown}, the feed has {chain}"
                )
            self.note(f"{name} {node_id}: API showed {shown}; feed {chain}")


def _running(slot: Slot) -> bool:
    return slot.desired == "RUNNING"


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def fault_seed() -> int:
    """The run's seed: NODEPLANE_FAULT_SEED, else a fresh one (printed, and on every failure)."""
    raw = os.environ.get(SEED_ENV)
    seed = int(raw) if raw else random.SystemRandom().randrange(2**32)
    print(f"\nfault test: {SEED_ENV}={seed} {SECONDS_ENV}={FAULT_SECONDS:g}")
    return seed


# Two runs of a few minutes each: both databases and both drivers, each pair once (the agent's
# runtime is the same on either database; what a driver does under faults is not).
SETUPS = ["sqlite/process", "postgresql/systemd"]


@pytest.fixture
def fault_server(setup: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A control plane of this test alone (it is killed and started again) on the setup's
    database."""
    backend = setup.split("/")[0]
    workdir = tmp_path / "plane"
    url = f"sqlite:///{workdir / 'nodeplane.db'}" if backend == "sqlite" else create_pg_database()
    server = ServerProcess(database_url=url, workdir=workdir, heartbeat_timeout=4)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if backend == "postgresql":
            drop_pg_database(url)


def _fault_agent(
    request: pytest.FixtureRequest, setup: str, server: ServerProcess, org: Org, workdir: Path
) -> AgentProcess:
    """The agent on the setup's driver; the process driver where systemd cannot be sandboxed."""
    sandbox: SystemdSandbox | None = None
    if setup.endswith("/systemd") and SystemdSandbox.unavailable_reason() is None:
        sandbox = request.getfixturevalue("systemd_sandbox")
    return AgentProcess(
        workdir=workdir,
        server_url=server.url,
        api_key=org.executor_key(),
        driver="systemd" if sandbox is not None else "process",
        sandbox=sandbox,
        name=f"faults-{uuid.uuid4().hex[:6]}",
    )


@contextlib.contextmanager
def _seed_on_failure(seed: int, timeline: Path) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        exc.add_note(
            f"reproduce with {SEED_ENV}={seed} {SECONDS_ENV}={FAULT_SECONDS:g}; "
            f"timeline: {timeline}"
        )
        raise


@pytest.mark.timeout(int(FAULT_SECONDS + CONVERGE_SECONDS) + 300)
@pytest.mark.parametrize("setup", SETUPS)
def test_random_faults_converge(
    request: pytest.FixtureRequest,
    setup: str,
    fault_seed: int,
    fault_server: ServerProcess,
    tmp_path: Path,
    artifacts_dir: Path,
) -> None:
    """Random actions on five nodes for NODEPLANE_FAULT_SECONDS, interleaved with kill -9 of
    the agent, of litecoind and of the control plane and with corrupted state files; then every
    node converges to what was last asked, with one process or none, heights kept, and the feed
    holding every phase the API showed."""
    server = fault_server
    token = Client(server.url)(
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
        {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
    )["login"]["token"]
    org = make_org(server.url, Client(server.url, token))
    agent = _fault_agent(request, setup, server, org, tmp_path / "agent")
    backend = "sqlite" if server.database_url.startswith("sqlite") else "postgresql"
    timeline = artifacts_dir / f"fault-test-{backend}-{agent.driver}-{fault_seed}.log"
    run = FaultRun(seed=fault_seed, server=server, org=org, agent=agent, timeline_path=timeline)
    faults = enabled_faults()
    run.note(f"seed {fault_seed}, {FAULT_SECONDS:g} s, {backend}, {agent.driver} driver")
    run.note(f"faults {sorted(faults)}")
    agent.start()
    try:
        with _seed_on_failure(fault_seed, timeline):
            wait_for(lambda: _online(org, agent.name), timeout=60, what="agent online")
            for slot in run.slots:
                run.create(slot, "RUNNING")
            run.start_watchers()
            wait_for(
                lambda: run.problems() == [], timeout=120, what="five nodes running", interval=1
            )
            run.note("all running; faults begin")

            kinds, weights = list(faults), list(faults.values())
            deadline = time.monotonic() + FAULT_SECONDS
            actions = 0
            while time.monotonic() < deadline:
                run.tend()
                run.act(run.rng.choices(kinds, weights)[0])
                actions += 1
                time.sleep(run.rng.uniform(0.05, 1.5))
            run.tend(everything=True)
            run.note(f"faults end after {actions} actions; quiet period")
            wait_for(lambda: _online(org, agent.name), timeout=60, what="agent online again")
            run.settle_desired()
            run.check_converged()
            run.note("converged")
            run.stop_watchers()
            assert run.violations == [], run.violations
            run.check_heights()
            run.check_transitions()
    finally:
        run.stop_watchers()
        run.close()
        agent.stop()
        _cleanup_units(agent)
