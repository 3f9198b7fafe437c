"""The agent backend: plan a node's units from its spec, apply them through a driver, observe.

`plan_actions` is the pure diff (desired spec vs. what the driver reports); `AgentBackend` is the
thin shell that renders files, runs init steps, and performs the actions.
"""

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import httpx
import structlog

from nodeplane.chains.base import (
    ChainAdapter,
    NodeConfigError,
    NodeLayout,
    NodePlan,
    ProcessPlan,
    RenderContext,
)
from nodeplane.executor.agent import port_owners
from nodeplane.executor.agent.driver import (
    UNIT_PREFIX,
    ActiveState,
    Driver,
    DriverError,
    UnitSpec,
    UnitStatus,
    unit_name,
)
from nodeplane.executor.agent.exits import (
    LastRun,
    ProcessExit,
    exit_text,
    last_run,
    output_excerpt,
    read_tail,
)
from nodeplane.executor.agent.layout import UnsafePath, inside, node_layout, nodes_root
from nodeplane.executor.agent.ports import allocate_ports, ports_in_use
from nodeplane.executor.runtime.backend import ApplyError
from nodeplane.protocol import (
    AssignedNodeSpec,
    DesiredState,
    EventLevel,
    ExecutorCapabilities,
    ExecutorKind,
    HostResources,
    NodeSpec,
    ObservedProcess,
    ProcessStatus,
    RuntimeEvent,
    RuntimeEventType,
    spec_bound_problems,
)
from nodeplane.protocol.observed import MAX_MESSAGE_LENGTH
from nodeplane.protocol.quantities import cpu_cores, memory_bytes
from nodeplane.protocol.text import storable_excerpt

log = structlog.get_logger(__name__)

BinaryResolver = Callable[[ChainAdapter, str, str, str], Path]
"""(adapter, role, client, version) -> executable path; raises ApplyError when unavailable."""


class Action(StrEnum):
    """What the applier does to one unit."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REMOVE = "remove"


@dataclass(frozen=True)
class UnitState:
    """What the planner needs to know of an installed unit."""

    running: bool  # active or activating
    definition_changed: bool
    crashed: bool = False  # down after a failure its restart policy did not (or no longer) heal


def crashed(unit: UnitStatus) -> bool:
    """Whether the unit is down after an exit it did not ask for (failed, or inactive unclean)."""
    return unit.active_state is ActiveState.FAILED or (
        unit.active_state is ActiveState.INACTIVE and unit.result not in (None, "", "success")
    )


def plan_actions(
    *,
    desired: DesiredState,
    restart_requested: bool,
    wanted: Sequence[str],
    installed: Mapping[str, UnitState],
    stray: Sequence[str],
    new_revision: bool = True,
) -> list[tuple[Action, str]]:
    """The pure diff: which units to start, stop, restart or remove. No I/O.

    A crashed unit stays down (its process is reported `error`) until a new revision asks again
    (start, restart, a changed definition): restarting after a crash is the restart policy's call,
    not the reconciler's.
    """
    actions: list[tuple[Action, str]] = [(Action.REMOVE, name) for name in stray]
    for name in wanted:
        state = installed.get(name, UnitState(running=False, definition_changed=True))
        if desired is DesiredState.STOPPED:
            if state.running:
                actions.append((Action.STOP, name))
        elif state.running and (restart_requested or state.definition_changed):
            actions.append((Action.RESTART, name))
        elif not state.running:
            if state.crashed and not (new_revision or state.definition_changed):
                continue
            actions.append((Action.START, name))
    return actions


def process_status(unit: UnitStatus, desired: DesiredState) -> ProcessStatus:
    """The raw process status systemd's state maps to (probes refine `running`)."""
    match unit.active_state:
        case ActiveState.ACTIVE:
            return ProcessStatus.RUNNING
        case ActiveState.ACTIVATING:
            return ProcessStatus.STARTING
        case ActiveState.DEACTIVATING:
            return ProcessStatus.STOPPING
        case ActiveState.FAILED:
            return ProcessStatus.ERROR
        case _:
            # Inactive after a crash with Restart=no: an error only if it should be running.
            crashed = unit.result not in (None, "", "success")
            return (
                ProcessStatus.ERROR
                if crashed and desired is DesiredState.RUNNING
                else ProcessStatus.STOPPED
            )


_AT_REST = (ActiveState.INACTIVE, ActiveState.FAILED)


def waiting_to_restart(unit: UnitStatus) -> bool:
    """Whether the unit's process ended and the driver will start it again after its delay."""
    return unit.active_state is ActiveState.ACTIVATING and unit.sub_state == "auto-restart"


def last_exit(unit: UnitStatus, run: LastRun | None) -> ProcessExit | None:
    """How the unit's process last ended: from the driver while it knows, else from the log.

    systemd forgets the exit status (and says Result=success) once it restarted the unit; the
    exit line its ExecStopPost= appended to the log still tells.
    """
    if unit.exit_code is not None or unit.exit_signal is not None:
        return ProcessExit(unit.result, unit.exit_code, unit.exit_signal)
    if run is not None and run.exit is not None:
        return run.exit
    if unit.active_state is ActiveState.FAILED or waiting_to_restart(unit):
        return ProcessExit(unit.result)
    return None


def exit_message(unit: UnitStatus, run: LastRun | None, taken: Sequence[str] = ()) -> str:
    """Why a process is down, in words: its exit, whether it was given up, what it printed.

    e.g. "exited with code 1; gave up after 4 restarts in a row (a crash loop): start or
    restart the node to try again. Last output: Error: Disk space is too low!"
    """
    text = exit_text(last_exit(unit, run))
    if unit.active_state is ActiveState.FAILED and unit.restarts > 0:
        text += (
            f"; gave up after {unit.restarts} restarts in a row (a crash loop): "
            "start or restart the node to try again"
        )
    elif waiting_to_restart(unit):
        text += "; restarting"
    if taken:
        text += "; " + "; ".join(taken)
    excerpt = output_excerpt(run.output) if run is not None else ""
    return f"{text}. Last output: {excerpt}" if excerpt else text


class AgentBackend:
    """Runs nodes as units on this host under `<data_dir>/nodes/<name>/`."""

    kind = ExecutorKind.AGENT

    def __init__(
        self,
        *,
        data_dir: Path,
        driver: Driver,
        adapters: Sequence[ChainAdapter],
        resolve_binary: BinaryResolver,
        capabilities: Callable[[], ExecutorCapabilities],
        restart_delay_s: float = 5.0,
        stable_after_s: float = 30.0,
    ) -> None:
        self.data_dir = data_dir
        self.restart_delay_s = restart_delay_s  # for every unit: see UnitSpec
        self.stable_after_s = stable_after_s
        self.driver = driver
        self.adapters = {a.chain: a for a in adapters}
        self._resolve_binary = resolve_binary
        self._capabilities = capabilities
        self._events: list[RuntimeEvent] = []
        self._restarts_seen: dict[str, int] = {}
        self._crash_seen: dict[str, bool] = {}  # a crash event was sent for the unit's current fall
        # No keep-alive: bitcoind-family daemons wait for open RPC connections before exiting,
        # which would stretch every stop by their 30 s HTTP server timeout.
        self._http = httpx.AsyncClient(
            timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    # ---- what the executor offers -----------------------------------------------------------

    def capabilities(self) -> ExecutorCapabilities:
        """Chains and client versions this host can run."""
        return self._capabilities()

    def resources(self) -> HostResources:
        """CPU, memory and disk of this host."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        disk = shutil.disk_usage(self.data_dir)
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return HostResources(
            cpu_cores=float(os.cpu_count() or 1),
            memory_bytes=pages,
            disk_total_bytes=disk.total,
            disk_available_bytes=disk.free,
        )

    def drain_events(self) -> list[RuntimeEvent]:
        """Crash and restart events seen since the last call."""
        events, self._events = self._events, []
        return events

    # ---- rendering --------------------------------------------------------------------------

    def _adapter(self, spec: NodeSpec) -> ChainAdapter:
        adapter = self.adapters.get(spec.chain)
        if adapter is None:
            raise ApplyError(f"this agent has no adapter for chain {spec.chain!r}")
        return adapter

    def _layout(self, name: str) -> NodeLayout:
        try:
            return node_layout(self.data_dir, name)
        except UnsafePath as exc:
            raise ApplyError(str(exc)) from None

    def _render(self, node: AssignedNodeSpec) -> tuple[NodeLayout, NodePlan]:
        spec = node.spec
        if spec is None:
            raise ApplyError("no spec to apply")
        adapter = self._adapter(spec)
        layout = self._layout(node.name)
        # The executor validates again what the control plane validated (DESIGN §7).
        if bounds := spec_bound_problems(spec):
            raise ApplyError("; ".join(f"{p.path}: {p.message}" for p in bounds))
        try:
            adapter.client_defs(spec)
            wanted_ports = adapter.ports(spec)
            ports = allocate_ports(
                layout.root / "ports.json",
                wanted_ports,
                ports_in_use(nodes_root(self.data_dir), node.name),
            )
            binaries = {
                role: self._resolve_binary(adapter, role, sel.name, sel.version)
                for role, sel in spec.clients.items()
            }
            ctx = RenderContext(node_name=node.name, layout=layout, ports=ports, binaries=binaries)
            return layout, adapter.render(spec, ctx)
        except NodeConfigError as exc:
            raise ApplyError(str(exc)) from None

    def _unit(self, node: AssignedNodeSpec, layout: NodeLayout, process: ProcessPlan) -> UnitSpec:
        assert node.spec is not None
        resources = node.spec.resources
        return UnitSpec(
            name=unit_name(node.name, process.role),
            node=node.name,
            role=process.role,
            process=process,
            restart_policy=node.spec.agent.restart_policy,
            cpu_limit=cpu_cores(resources.cpu_limit) if resources.cpu_limit else None,
            memory_limit_bytes=memory_bytes(resources.memory_limit)
            if resources.memory_limit
            else None,
            log_file=layout.root / "logs" / f"{process.role}.log",
            restart_delay_s=self.restart_delay_s,
            stable_after_s=self.stable_after_s,
        )

    # ---- apply ------------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Let the driver apply restart policies (the built-in supervisor needs this tick)."""
        for exit_ in await self.driver.supervise():
            log.info("unit.exited", exit=str(exit_))

    async def apply(self, node: AssignedNodeSpec) -> None:
        """Converge the node: files, init steps, units, then start/stop/restart as planned."""
        try:
            await self._apply(node)
        except DriverError as exc:
            raise ApplyError(str(exc)) from None

    async def _apply(self, node: AssignedNodeSpec) -> None:
        assert node.spec is not None
        if node.spec.desired_state is DesiredState.RUNNING:
            marker = self._applied_marker(self._layout(node.name))
            restart = marker.get("restartGeneration", 0) < node.spec.restart_generation
            await self._move_taken_ports(node, restart)
        layout, plan = await asyncio.to_thread(self._render, node)
        await asyncio.to_thread(self._write_files, layout, plan)
        await self._run_init_steps(layout, plan)
        units = [self._unit(node, layout, p) for p in plan.processes]
        wanted = [u.name for u in units]
        installed: dict[str, UnitState] = {}
        for unit in units:
            changed = await self.driver.install(unit)
            status = await self.driver.status(unit.name)
            running = status.active_state in (ActiveState.ACTIVE, ActiveState.ACTIVATING)
            installed[unit.name] = UnitState(
                running=running, definition_changed=changed, crashed=crashed(status)
            )
        applied = self._applied_marker(layout)
        restart_requested = applied.get("restartGeneration", 0) < node.spec.restart_generation
        stray = [u for u in await self._node_units(node.name) if u not in wanted]
        actions = plan_actions(
            desired=node.spec.desired_state,
            restart_requested=restart_requested,
            wanted=wanted,
            installed=installed,
            stray=stray,
            new_revision=applied.get("revision", 0) != node.revision,
        )
        await self._check_ports(
            node, [n for a, n in actions if a in (Action.START, Action.RESTART)]
        )
        for action, name in actions:
            log.info("unit.action", node=node.name, unit=name, action=action.value)
            match action:
                case Action.START:
                    await self.driver.start(name)
                case Action.STOP:
                    await self.driver.stop(name)
                case Action.RESTART:
                    await self.driver.restart(name)
                case Action.REMOVE:
                    await self.driver.remove(name)
        self._write_applied_marker(
            layout, {"restartGeneration": node.spec.restart_generation, "revision": node.revision}
        )

    def _write_files(self, layout: NodeLayout, plan: NodePlan) -> None:
        layout.root.mkdir(parents=True, exist_ok=True)
        layout.root.chmod(0o700)
        for relative in (*plan.directories, "config", "data", "logs"):
            try:
                directory = inside(layout.root, relative)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        for file in plan.files:
            try:
                target = inside(layout.config_dir, file.relative_path)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            if target.exists() and target.read_text() == file.content:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(file.content)
            tmp.chmod(file.mode)
            tmp.replace(target)

    async def _run_init_steps(self, layout: NodeLayout, plan: NodePlan) -> None:
        for step in plan.init_steps:
            try:
                marker = inside(layout.root, step.creates)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            if marker.exists():
                continue
            if step.random_hex_bytes:
                marker.parent.mkdir(parents=True, exist_ok=True)
                tmp = marker.with_name(f".{marker.name}.tmp")
                tmp.write_text(secrets.token_hex(step.random_hex_bytes))
                tmp.chmod(0o600)
                tmp.replace(marker)
                continue
            if step.argv:
                proc = await asyncio.create_subprocess_exec(
                    *step.argv,
                    cwd=layout.root,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                output, _ = await proc.communicate()
                if proc.returncode != 0:
                    tail = output.decode(errors="replace")[-2000:]
                    raise ApplyError(f"init step {step.name!r} failed ({proc.returncode}): {tail}")

    @staticmethod
    def _applied_marker(layout: NodeLayout) -> dict[str, int]:
        path = layout.root / "applied.json"
        try:
            data: dict[str, int] = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    @staticmethod
    def _write_applied_marker(layout: NodeLayout, data: dict[str, int]) -> None:
        path = layout.root / "applied.json"
        tmp = path.with_name(".applied.json.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    async def _node_units(self, name: str) -> list[str]:
        # Roles never contain '-', so `nodeplane-a-node` is node a's, not node "a-node"'s prefix.
        prefix = f"{UNIT_PREFIX}{name}-"
        return [
            u
            for u in await self.driver.list_units()
            if u.startswith(prefix) and "-" not in u[len(prefix) :].removesuffix(".service")
        ]

    # ---- observe ----------------------------------------------------------------------------

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        """Each process's unit state joined with its probe, plus CPU, memory and disk."""
        spec = node.spec
        if spec is None:
            return []
        try:
            layout, plan = await asyncio.to_thread(self._render, node)
        except ApplyError:
            return []
        adapter = self._adapter(spec)
        disk = shutil.disk_usage(layout.data_dir) if layout.data_dir.exists() else None
        observed: list[ObservedProcess] = []
        for process in plan.processes:
            name = unit_name(node.name, process.role)
            unit = await self.driver.status(name)
            status = process_status(unit, spec.desired_state)
            down = status is ProcessStatus.ERROR or waiting_to_restart(unit)
            restarted = unit.restarts > self._restarts_seen.get(name, unit.restarts)
            run = None
            if down or restarted or (crashed(unit) and not self._crash_seen.get(name)):
                # Why it ended: the last run's exit line and output from the unit's log.
                log_file = layout.root / "logs" / f"{process.role}.log"
                run = last_run(await asyncio.to_thread(read_tail, log_file))
            self._note_restarts(node, name, unit, run)
            metrics: dict[str, object] = {}
            message = None
            if down:
                taken: list[port_owners.TakenPort] = []
                if status is ProcessStatus.ERROR:  # not while restarting: a bind test could race
                    taken = await asyncio.to_thread(self._taken_ports, node, {process.role})
                message = exit_message(unit, run, [t.describe() for t in taken])
            if status is ProcessStatus.RUNNING:
                probe = await adapter.probe(process, self._http)
                status = probe.status
                message = probe.message
                metrics = {
                    "height": probe.height,
                    "network_height": probe.network_height,
                    "peers": probe.peers,
                    "sync_progress": probe.sync_progress,
                }
            observed.append(
                ObservedProcess(
                    role=process.role,
                    status=status,
                    message=storable_excerpt(message, MAX_MESSAGE_LENGTH) if message else None,
                    pid=unit.main_pid or None,
                    cpu_seconds=unit.cpu_seconds,
                    memory_bytes=unit.memory_bytes,
                    disk_total_bytes=disk.total if disk else None,
                    disk_available_bytes=disk.free if disk else None,
                    **metrics,
                )
            )
        return observed

    def _note_restarts(
        self, node: AssignedNodeSpec, name: str, unit: UnitStatus, run: LastRun | None
    ) -> None:
        """Events for a restart the driver made, and for a crash that left the unit down.

        The exit is described from the driver while it remembers it, else from the exit line
        in the log (`run`): "exited (killed by SIGKILL) and was restarted".
        """
        seen = self._restarts_seen.get(name)
        self._restarts_seen[name] = unit.restarts
        down = crashed(unit)
        exit_ = last_exit(unit, run)
        payload: dict[str, object] = {
            "unit": name,
            "result": exit_.result if exit_ is not None else unit.result,
            "exitCode": exit_.exit_code if exit_ is not None else None,
            "exitSignal": exit_.exit_signal if exit_ is not None else None,
        }
        # A crash that left the unit down first: systemd also counts the restart its start
        # limit refused, and that is no restart.
        if down and not self._crash_seen.get(name):
            self._events.append(
                RuntimeEvent(
                    node_id=node.node_id,
                    type=RuntimeEventType.NODE_PROCESS_CRASHED,
                    level=EventLevel.ERROR,
                    message=storable_excerpt(
                        f"{name} {exit_message(unit, run)}", MAX_MESSAGE_LENGTH
                    ),
                    payload={**payload, "restarts": unit.restarts},
                )
            )
        elif seen is not None and unit.restarts > seen and not down:
            self._events.append(
                RuntimeEvent(
                    node_id=node.node_id,
                    type=RuntimeEventType.NODE_PROCESS_RESTARTED,
                    level=EventLevel.WARN,
                    message=storable_excerpt(
                        f"{name} {exit_text(exit_)} and was restarted", MAX_MESSAGE_LENGTH
                    ),
                    payload={**payload, "restarts": unit.restarts},
                )
            )
        self._crash_seen[name] = down

    def _taken_ports(self, node: AssignedNodeSpec, roles: set[str]) -> list[port_owners.TakenPort]:
        """Ports of `roles` (allocated in ports.json) that another program holds now."""
        assert node.spec is not None
        path = self._layout(node.name).root / "ports.json"
        try:
            ports = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
            defs = [d for d in self._adapter(node.spec).ports(node.spec) if d.role in roles]
        except (OSError, ValueError, TypeError, AttributeError, KeyError, NodeConfigError):
            return []  # nothing allocated yet (or unreadable: rebuilt on the next apply)
        return port_owners.taken_ports(ports, defs)

    async def _down_roles(self, node: AssignedNodeSpec, names: Sequence[str]) -> set[str]:
        """Roles of the units in `names` that are down and stay so until the agent starts them.

        Not a unit waiting for its automatic restart: the driver may start it any moment, and
        its own process binding its ports then is no other program.
        """
        roles = set()
        for name in names:
            unit = await self.driver.status(name)
            if unit.main_pid is None and unit.active_state in _AT_REST:
                roles.add(name.removeprefix(f"{UNIT_PREFIX}{node.name}-").removesuffix(".service"))
        return roles

    async def _move_taken_ports(self, node: AssignedNodeSpec, restart_requested: bool) -> None:
        """Give the node new ports for those another program took while its process was down.

        Only what `port_owners.movable` allows: loopback ports at once, public ones when the
        user restarts the node; before the files are rendered, so the client gets the new ones.
        """
        spec = node.spec
        assert spec is not None
        try:
            defs = self._adapter(spec).ports(spec)
        except (ApplyError, NodeConfigError, KeyError):
            return  # the render that follows says what is wrong
        roles = {d.role for d in defs}
        down = await self._down_roles(node, [unit_name(node.name, r) for r in roles])
        taken = await asyncio.to_thread(self._taken_ports, node, down)
        moved = [t for t in taken if port_owners.movable(t, restart_requested=restart_requested)]
        if not moved:
            return
        layout = self._layout(node.name)
        elsewhere = ports_in_use(nodes_root(self.data_dir), node.name) | {t.port for t in moved}
        ports = await asyncio.to_thread(allocate_ports, layout.root / "ports.json", defs, elsewhere)
        for t in moved:
            log.warning(
                "ports.moved", node=node.name, key=t.key, old=t.port, new=ports.get(t.key),
                reason=t.describe(),
            )  # fmt: skip

    async def _check_ports(self, node: AssignedNodeSpec, names: Sequence[str]) -> None:
        """ApplyError naming port and holder if a unit about to start would find one taken."""
        down = await self._down_roles(node, names)
        taken = await asyncio.to_thread(self._taken_ports, node, down) if down else []
        if taken:
            # Only public ports are left here: loopback ones were moved before rendering.
            raise ApplyError(
                "cannot start: "
                + "; ".join(t.describe() for t in taken)
                + " (a public port: free it, or restart the node to give it another port)"
            )

    # ---- teardown ---------------------------------------------------------------------------

    async def teardown(self, node: AssignedNodeSpec) -> None:
        """Stop and remove the node's units; remove its directory unless data is retained."""
        layout = self._layout(node.name)
        for name in await self._node_units(node.name):
            await self.driver.remove(name)
        if node.retain_data:
            return
        if layout.root.exists():
            if (
                layout.root.is_symlink()
                or layout.root.resolve().parent != nodes_root(self.data_dir).resolve()
            ):
                raise ApplyError(f"refusing to remove {layout.root}: not a plain node directory")
            await asyncio.to_thread(shutil.rmtree, layout.root)
