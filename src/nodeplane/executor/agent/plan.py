"""The agent's reconcile as a pure diff: what to do to a node, given what should be and what is.

`plan(rendered, observed)` is a function of two values and does no I/O (DESIGN §9). `rendered` is
what the node's revision asks for (directories, file digests, init steps, unit names, revision and
restart generation); `observed` is what is materialized on the host now (which of those exist, the
digests of the files on disk, each unit's state and the stamp in its installed definition).

What was applied is stamped on the unit definition itself (`Stamp`), not kept in a side file: the
revision (so a crashed unit stays down until a new revision asks again) and the restart generation
(so a restart request is done once). A unit that is about to be (re)started for a change is first
installed with a *pending* stamp, and the final stamp is installed only after the restart: an agent
killed in between finds the pending stamp and does the restart again, never loses it. A unit that
is down without having crashed needs no pending stamp (any agent that finds it so starts it): it
gets its final stamp before it starts.

A stamp that is already what the revision asks for means the revision was applied: its units are
never restarted (nor a crashed one started) because their definition or files now render
differently. That happens when the agent itself changes (an upgrade adds lines to every unit, a
`[supervision]` setting changes) or someone edits a file by hand; the new definition and files are
installed and take effect at the unit's next start. Only a new revision (or restart generation)
restarts a running unit for a changed definition or config file.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from nodeplane.executor.agent.driver import Stamp
from nodeplane.protocol import DesiredState

PORTS_FILE = "ports.json"  # the agent's record of the node's ports, relative to its root


class ActionKind(StrEnum):
    """One step of the applier."""

    CREATE_DIRECTORY = "create-directory"  # target: path relative to the node root
    WRITE_FILE = "write-file"  # target: path relative to the node root
    RUN_INIT_STEP = "run-init-step"  # target: the step's name
    INSTALL = "install"  # target: unit name; `pending` says which stamp
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REMOVE = "remove"


@dataclass(frozen=True)
class Action:
    """Do `kind` to `target`. For INSTALL, `pending` installs the pending stamp."""

    kind: ActionKind
    target: str
    pending: bool = False


@dataclass(frozen=True)
class RenderedNode:
    """What one revision of a node asks to be materialized (content as digests)."""

    revision: int
    restart_generation: int
    desired: DesiredState
    units: Sequence[str]
    directories: Sequence[str] = ()
    files: Mapping[str, str] = field(default_factory=dict)  # path -> digest of its content
    init_steps: Sequence[str] = ()

    @property
    def stamp(self) -> Stamp:
        """The stamp a unit carries once this revision is applied."""
        return Stamp(revision=self.revision, restart_generation=self.restart_generation)


@dataclass(frozen=True)
class ObservedUnit:
    """An installed unit of the node as the driver reports it."""

    running: bool = False  # active or activating (a scheduled restart counts)
    crashed: bool = False  # down after a failure its restart policy did not (or no longer) heal
    # Going down (deactivating): how its process ends decides whether it crashed, so it is
    # neither started nor left down for good until that is seen.
    stopping: bool = False
    # The installed definition equals the rendered one, stamps aside.
    definition_current: bool = True
    stamp: Stamp | None = None


@dataclass(frozen=True)
class ObservedNode:
    """What is on the host for the node now."""

    units: Mapping[str, ObservedUnit] = field(default_factory=dict)  # every unit of the node
    directories: frozenset[str] = frozenset()  # of the rendered ones, those that exist
    files: Mapping[str, str] = field(default_factory=dict)  # path -> digest, for existing files
    init_done: frozenset[str] = frozenset()  # init steps whose output exists
    # What an agent of an older version recorded in applied.json, for its units without a stamp.
    legacy: Stamp | None = None


def plan(rendered: RenderedNode, observed: ObservedNode) -> list[Action]:
    """The actions that converge `observed` to `rendered`, in the order they must run."""
    final = rendered.stamp
    changed_files = [p for p, digest in rendered.files.items() if observed.files.get(p) != digest]
    # Only a change a process reads needs a restart; the ports file is the agent's own.
    config_changed = any(p != PORTS_FILE for p in changed_files)
    before: list[Action] = []  # pending stamps, before anything they announce is changed
    runs: list[Action] = []  # stop, start, restart
    after: list[Action] = []  # final stamps
    for name in rendered.units:
        unit = observed.units.get(name)
        if unit is None:
            if rendered.desired is DesiredState.RUNNING:
                # Final stamp first: see "down without a crash" below.
                before.append(Action(ActionKind.INSTALL, name))
                runs.append(Action(ActionKind.START, name))
            else:
                after.append(Action(ActionKind.INSTALL, name))
            continue
        # A unit an older agent installed has no stamp: what it recorded in applied.json stands.
        stamp = unit.stamp or observed.legacy
        up_to_date = unit.definition_current and unit.stamp == final
        if rendered.desired is DesiredState.STOPPED:
            if unit.running:
                runs.append(Action(ActionKind.STOP, name))
            if not up_to_date:
                after.append(Action(ActionKind.INSTALL, name))
            continue
        changed = not unit.definition_current or config_changed
        pending = stamp is not None and stamp.pending_restart
        # The revision is not applied yet (or nobody knows what was: no stamp, no applied.json).
        asked = stamp is None or stamp.revision != final.revision
        if unit.running:
            restart_asked = (
                stamp is not None and stamp.restart_generation < final.restart_generation
            )
            # A change alone restarts only for a new revision: see the module's docstring.
            go = (changed and asked) or pending or restart_asked
            kind = ActionKind.RESTART
        elif not unit.crashed and not unit.stopping:
            # Down without a crash: whichever agent finds it so starts it, so no pending stamp
            # is needed, and the final one goes first. That spares systemd a daemon-reload right
            # after the start: a reload forgets the starts its crash-loop limit (StartLimitBurst=)
            # has counted, which would give a unit that crash-loops at once a run too many.
            if not up_to_date:
                before.append(Action(ActionKind.INSTALL, name))
            runs.append(Action(ActionKind.START, name))
            continue
        else:
            # A crashed unit stays down (its restart policy decided) until a new revision asks.
            # So does one going down: a start now would undo a crash its policy leaves down,
            # and a clean stop is seen, and started, on a later pass.
            go = asked or pending
            kind = ActionKind.START
        announce = go and (changed or stamp != final) and not (pending and unit.definition_current)
        if announce:
            before.append(Action(ActionKind.INSTALL, name, pending=True))
        if go:
            runs.append(Action(kind, name))
        if announce or not up_to_date:
            after.append(Action(ActionKind.INSTALL, name))
    stray = [
        Action(ActionKind.REMOVE, name)
        for name in sorted(observed.units)
        if name not in rendered.units
    ]
    return [
        *(
            Action(ActionKind.CREATE_DIRECTORY, d)
            for d in rendered.directories
            if d not in observed.directories
        ),
        *before,
        *(Action(ActionKind.WRITE_FILE, p) for p in changed_files),
        *(
            Action(ActionKind.RUN_INIT_STEP, step)
            for step in rendered.init_steps
            if step not in observed.init_done
        ),
        *stray,
        *runs,
        *after,
    ]
