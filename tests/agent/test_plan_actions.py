"""The agent's pure diff: what the applier does to a node, given what should be and what is.

Each row: a name, what the revision renders, what is observed on the host, and the exact actions.
"""

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from nodeplane.executor.agent.driver import Stamp
from nodeplane.executor.agent.plan import (
    Action,
    ActionKind,
    ObservedNode,
    ObservedUnit,
    RenderedNode,
    plan,
)
from nodeplane.protocol import DesiredState

UNIT = "nodeplane-a-node.service"
OTHER = "nodeplane-a-beacon.service"
STRAY = "nodeplane-a-old.service"
CONF = "config/a.conf"
PORTS = "ports.json"
K = ActionKind

# Revision 5 with restart generation 2, running: the stamp its units carry once applied.
APPLIED = Stamp(revision=5, restart_generation=2)
PENDING = replace(APPLIED, pending_restart=True)
RUNNING = DesiredState.RUNNING
STOPPED = DesiredState.STOPPED


def rendered(
    desired: DesiredState = RUNNING,
    *,
    revision: int = 5,
    restart_generation: int = 2,
    units: tuple[str, ...] = (UNIT,),
) -> RenderedNode:
    return RenderedNode(
        revision=revision,
        restart_generation=restart_generation,
        desired=desired,
        units=units,
        directories=(".", "config", "data"),
        files={CONF: "conf-v5", PORTS: "ports-v1"},
        init_steps=("jwt",),
    )


def up(stamp: Stamp | None = APPLIED, **changes: Any) -> ObservedUnit:
    return replace(ObservedUnit(running=True, stamp=stamp), **changes)


def down(stamp: Stamp | None = APPLIED, **changes: Any) -> ObservedUnit:
    return replace(ObservedUnit(running=False, stamp=stamp), **changes)


def crashed(stamp: Stamp | None = APPLIED, **changes: Any) -> ObservedUnit:
    return down(stamp, crashed=True, **changes)


@dataclass
class Host:
    """What is observed: by default everything of revision 5 is materialized."""

    units: dict[str, ObservedUnit] = field(default_factory=lambda: {UNIT: up()})
    conf: str | None = "conf-v5"
    ports: str | None = "ports-v1"
    directories: tuple[str, ...] = (".", "config", "data")
    init_done: tuple[str, ...] = ("jwt",)
    legacy: Stamp | None = None

    def node(self) -> ObservedNode:
        files = {p: c for p, c in ((CONF, self.conf), (PORTS, self.ports)) if c is not None}
        return ObservedNode(
            units=self.units,
            directories=frozenset(self.directories),
            files=files,
            init_done=frozenset(self.init_done),
            legacy=self.legacy,
        )


def install(name: str = UNIT) -> Action:
    return Action(K.INSTALL, name)


def pending(name: str = UNIT) -> Action:
    return Action(K.INSTALL, name, pending=True)


def act(kind: ActionKind, target: str = UNIT) -> Action:
    return Action(kind, target)


NOTHING: list[Action] = []

CASES: list[tuple[str, RenderedNode, Host, list[Action]]] = [
    ("converged running node: nothing", rendered(), Host(), NOTHING),
    ("converged stopped node: nothing", rendered(STOPPED), Host({UNIT: down()}), NOTHING),
    (
        # Stamped before it starts: a unit down without a crash is started by any agent that
        # finds it so, and systemd needs no reload after the start (one would forget the starts
        # its crash-loop limit counted).
        "fresh host: directories, unit installed with its stamp, files, init, then started",
        rendered(),
        Host({}, conf=None, ports=None, directories=(), init_done=()),
        [
            act(K.CREATE_DIRECTORY, "."),
            act(K.CREATE_DIRECTORY, "config"),
            act(K.CREATE_DIRECTORY, "data"),
            install(),
            act(K.WRITE_FILE, CONF),
            act(K.WRITE_FILE, PORTS),
            act(K.RUN_INIT_STEP, "jwt"),
            act(K.START),
        ],
    ),
    (
        "fresh stopped node: the unit is installed, never started",
        rendered(STOPPED),
        Host({}),
        [install()],
    ),
    (
        "a missing directory is created, nothing else",
        rendered(),
        Host(directories=(".", "config")),
        [act(K.CREATE_DIRECTORY, "data")],
    ),
    (
        "restart generation bumped: pending stamp, restart, final stamp",
        rendered(revision=6, restart_generation=3),
        Host(),
        [pending(), act(K.RESTART), install()],
    ),
    (
        "a changed config file restarts the running unit, announced before it is written",
        rendered(revision=6),
        Host(conf="conf-v4"),
        [pending(), act(K.WRITE_FILE, CONF), act(K.RESTART), install()],
    ),
    (
        "a rewritten ports file alone restarts nothing",
        rendered(),
        Host(ports="garbage"),
        [act(K.WRITE_FILE, PORTS)],
    ),
    (
        "a changed unit definition restarts the running unit",
        rendered(revision=6),
        Host({UNIT: up(definition_current=False)}),
        [pending(), act(K.RESTART), install()],
    ),
    (
        "a new revision that changes nothing for the unit: stamped, not restarted",
        rendered(revision=6),
        Host(),
        [install()],
    ),
    (
        # Between the pending stamp and the restart, or between the restart and the final stamp
        # (the same thing seen from here): one restart too many at worst, never a lost one.
        "an agent killed mid-restart: the restart is done again",
        rendered(),
        Host({UNIT: up(PENDING)}),
        [act(K.RESTART), install()],
    ),
    (
        "pending on a stopped unit: stamped, then started",
        rendered(),
        Host({UNIT: down(PENDING)}),
        [install(), act(K.START)],
    ),
    (
        "a new revision for a unit stopped cleanly: stamped before it starts",
        rendered(revision=6),
        Host({UNIT: down()}, conf="conf-v4"),
        [install(), act(K.WRITE_FILE, CONF), act(K.START)],
    ),
    (
        "a crashed unit stays down: its restart policy decided",
        rendered(),
        Host({UNIT: crashed()}),
        NOTHING,
    ),
    (
        # Killed with Restart=no: systemd shows it deactivating before failed. Started in that
        # moment, the crash would be undone by the agent (the e2e crash test caught it).
        "a unit going down is not started: it may be crashing, which its policy leaves down",
        rendered(),
        Host({UNIT: down(stopping=True)}),
        NOTHING,
    ),
    (
        "a unit going down is started by a new revision",
        rendered(revision=6),
        Host({UNIT: down(stopping=True)}),
        [pending(), act(K.START), install()],
    ),
    (
        "a crashed unit is started by a new revision",
        rendered(revision=6),
        Host({UNIT: crashed()}),
        [pending(), act(K.START), install()],
    ),
    (
        "a crashed unit is started by a restart request",
        rendered(revision=6, restart_generation=3),
        Host({UNIT: crashed()}),
        [pending(), act(K.START), install()],
    ),
    (
        "a crashed unit of the same stamp stays down when its definition renders differently",
        rendered(),
        Host({UNIT: crashed(definition_current=False)}),
        [install()],
    ),
    (
        # An upgraded agent (new lines in every unit) or a changed [supervision] setting: the
        # definition is installed and takes effect at the next start.
        "a running unit of the same stamp whose definition renders differently: not restarted",
        rendered(),
        Host({UNIT: up(definition_current=False)}),
        [install()],
    ),
    (
        "a config file rewritten for the same stamp (edited by hand): written, not restarted",
        rendered(),
        Host(conf="conf-v4"),
        [act(K.WRITE_FILE, CONF)],
    ),
    (
        "a new revision restarts a unit whose definition and config both changed",
        rendered(revision=6),
        Host({UNIT: up(definition_current=False)}, conf="conf-v4"),
        [pending(), act(K.WRITE_FILE, CONF), act(K.RESTART), install()],
    ),
    (
        "a unit without stamp or record whose definition differs: restarted (what runs is unknown)",
        rendered(),
        Host({UNIT: up(None, definition_current=False)}),
        [pending(), act(K.RESTART), install()],
    ),
    (
        "a unit stopped cleanly outside the agent is started again",
        rendered(),
        Host({UNIT: down()}),
        [act(K.START)],
    ),
    (
        "stop: the unit is stopped, then stamped",
        rendered(STOPPED, revision=6),
        Host(),
        [act(K.STOP), install()],
    ),
    (
        "stopped node with a changed config: written, not started",
        rendered(STOPPED, revision=6),
        Host({UNIT: down()}, conf="conf-v4"),
        [act(K.WRITE_FILE, CONF), install()],
    ),
    (
        "stopped node with a restart request: nothing runs",
        rendered(STOPPED, revision=6, restart_generation=3),
        Host({UNIT: crashed()}),
        [install()],
    ),
    (
        "stray units of the node are removed",
        rendered(),
        Host({UNIT: up(), STRAY: up(None)}),
        [act(K.REMOVE, STRAY)],
    ),
    (
        "two units: only the one that needs it is restarted",
        rendered(revision=6, units=(UNIT, OTHER)),
        Host({UNIT: up(), OTHER: up(definition_current=False)}),
        [pending(OTHER), act(K.RESTART, OTHER), install(), install(OTHER)],
    ),
    (
        "adopting an older agent's running unit: stamped without a restart",
        rendered(),
        Host({UNIT: up(None)}, legacy=APPLIED),
        [install()],
    ),
    (
        "adopting an older agent's unit with a restart it had not done yet",
        rendered(revision=6, restart_generation=3),
        Host({UNIT: up(None)}, legacy=APPLIED),
        [pending(), act(K.RESTART), install()],
    ),
    (
        "adopting an older agent's running unit that renders differently now: not restarted",
        rendered(),
        Host({UNIT: up(None, definition_current=False)}, conf="conf-v4", legacy=APPLIED),
        [act(K.WRITE_FILE, CONF), install()],
    ),
    (
        "adopting an older agent's crashed unit of the same revision: stays down, stamped",
        rendered(),
        Host({UNIT: crashed(None)}, legacy=APPLIED),
        [install()],
    ),
    (
        "a running unit without stamp or record (state rebuilt): stamped, not restarted",
        rendered(),
        Host({UNIT: up(None)}),
        [install()],
    ),
]


@pytest.mark.parametrize(
    ("wanted", "host", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan(wanted: RenderedNode, host: Host, expected: list[Action]) -> None:
    assert plan(wanted, host.node()) == expected


@pytest.mark.parametrize(
    ("wanted", "host"), [case[1:3] for case in CASES], ids=[case[0] for case in CASES]
)
def test_applying_the_plan_converges(wanted: RenderedNode, host: Host) -> None:
    """After the actions (simulated), the plan is empty: no action is ever repeated forever."""
    applied = simulate(wanted, host.node(), plan(wanted, host.node()))
    assert plan(wanted, applied) == []


def simulate(wanted: RenderedNode, node: ObservedNode, actions: list[Action]) -> ObservedNode:
    """What the host looks like after `actions`, as a perfect applier leaves it."""
    units = dict(node.units)
    files = dict(node.files)
    directories, init_done = set(node.directories), set(node.init_done)
    for action in actions:
        name = action.target
        match action.kind:
            case K.CREATE_DIRECTORY:
                directories.add(name)
            case K.WRITE_FILE:
                files[name] = wanted.files[name]
            case K.RUN_INIT_STEP:
                init_done.add(name)
            case K.INSTALL:
                stamp = replace(wanted.stamp, pending_restart=action.pending)
                before = units.get(name, ObservedUnit())
                units[name] = replace(before, definition_current=True, stamp=stamp)
            case K.START | K.RESTART:
                units[name] = replace(units[name], running=True, crashed=False, stopping=False)
            case K.STOP:
                units[name] = replace(units[name], running=False, crashed=False, stopping=False)
            case K.REMOVE:
                del units[name]
    return ObservedNode(
        units=units,
        directories=frozenset(directories),
        files=files,
        init_done=frozenset(init_done),
        legacy=None,
    )
