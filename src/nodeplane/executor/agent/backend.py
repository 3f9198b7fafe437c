"""The agent backend: plan a node's units from its spec, apply them through a driver, observe.

`plan_actions` is the pure diff (desired spec vs. what the driver reports); `AgentBackend` is the
thin shell that renders files, runs init steps, and performs the actions.
"""

import asyncio
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from uuid import UUID

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
from nodeplane.executor.agent.driver import (
    UNIT_PREFIX,
    UNIT_SUFFIX,
    ActiveState,
    Driver,
    DriverError,
    UnitSpec,
    UnitStatus,
    unit_name,
)
from nodeplane.executor.agent.layout import UnsafePath, inside, node_layout, nodes_root
from nodeplane.executor.agent.port_recovery import recover_ports
from nodeplane.executor.agent.ports import PortsFileError, allocate_ports, ports_in_use, read_ports
from nodeplane.executor.agent.statefile import make_directory, move_aside, write_atomic
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
from nodeplane.protocol.executor_api import MAX_EVENT_MESSAGE_LENGTH
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
    ) -> None:
        self.data_dir = data_dir
        self.driver = driver
        self.adapters = {a.chain: a for a in adapters}
        self._resolve_binary = resolve_binary
        self._capabilities = capabilities
        self._events: list[RuntimeEvent] = []
        self._restarts_seen: dict[str, int] = {}
        self._node_ids: dict[str, UUID] = {}  # node name -> id, for events the driver raises
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
            binaries = {
                role: self._resolve_binary(adapter, role, sel.name, sel.version)
                for role, sel in spec.clients.items()
            }
            ctx = RenderContext(node_name=node.name, layout=layout, ports={}, binaries=binaries)
            ports_file = layout.root / "ports.json"
            try:
                current = read_ports(ports_file)
            except PortsFileError as exc:
                # Rebuilt from what the node's config files already say, so a running node
                # keeps its ports; only ports found nowhere are allocated afresh.
                moved = move_aside(ports_file)
                current = recover_ports(adapter, spec, ctx, wanted_ports)
                self._state_rebuilt(node, exc, moved, recovered=current)
            ports = allocate_ports(
                ports_file,
                wanted_ports,
                ports_in_use(nodes_root(self.data_dir), node.name),
                current=current if current is not None else {},
            )
            ctx = RenderContext(node_name=node.name, layout=layout, ports=ports, binaries=binaries)
            return layout, adapter.render(spec, ctx)
        except NodeConfigError as exc:
            raise ApplyError(str(exc)) from None

    def _state_rebuilt(
        self,
        node: AssignedNodeSpec,
        problem: Exception,
        moved: Path | None,
        **detail: object,
    ) -> None:
        """An event (and an error log line) for a state file that was moved aside and rebuilt."""
        where = f"; moved to {moved.name}" if moved is not None else ""
        log.error("state_file.rebuilt", node=node.name, error=str(problem), moved_to=str(moved))
        self._events.append(
            RuntimeEvent(
                node_id=node.node_id,
                type=RuntimeEventType.EXECUTOR_STATE_REBUILT,
                level=EventLevel.WARN,
                message=storable_excerpt(
                    f"{node.name}: {problem}{where}; rebuilt", MAX_EVENT_MESSAGE_LENGTH
                ),
                payload={"movedTo": str(moved) if moved else None, **detail},
            )
        )

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
        )

    # ---- apply ------------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Let the driver apply restart policies (the built-in supervisor needs this tick)."""
        try:
            for exit_ in await self.driver.supervise():
                log.info("unit.exited", exit=str(exit_))
        finally:
            self._driver_problems()

    def _driver_problems(self) -> None:
        """Events for what the driver handled on its own (a state file moved aside, ...)."""
        for problem in self.driver.drain_problems():
            node = problem.unit.removeprefix(UNIT_PREFIX).removesuffix(UNIT_SUFFIX)
            node = node.rpartition("-")[0]
            self._events.append(
                RuntimeEvent(
                    node_id=self._node_ids.get(node),
                    type=RuntimeEventType.EXECUTOR_STATE_REBUILT
                    if problem.path is not None
                    else RuntimeEventType.EXECUTOR_HOUSEKEEPING_FAILED,
                    level=EventLevel.WARN if problem.path is not None else EventLevel.ERROR,
                    message=storable_excerpt(problem.message, MAX_EVENT_MESSAGE_LENGTH),
                    payload={
                        "unit": problem.unit,
                        "path": str(problem.path) if problem.path else None,
                        "movedTo": str(problem.moved_to) if problem.moved_to else None,
                    },
                )
            )

    async def apply(self, node: AssignedNodeSpec) -> None:
        """Converge the node: files, init steps, units, then start/stop/restart as planned."""
        self._node_ids[node.name] = node.node_id
        try:
            await self._apply(node)
        except DriverError as exc:
            raise ApplyError(str(exc)) from None
        except OSError as exc:
            # A full or read-only disk, say: this node's error, never the agent's end.
            raise ApplyError(os_error_text(exc)) from None
        finally:
            self._driver_problems()

    async def _apply(self, node: AssignedNodeSpec) -> None:
        layout, plan = await asyncio.to_thread(self._render, node)
        assert node.spec is not None
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
        for action, name in plan_actions(
            desired=node.spec.desired_state,
            restart_requested=restart_requested,
            wanted=wanted,
            installed=installed,
            stray=stray,
            new_revision=applied.get("revision", 0) != node.revision,
        ):
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
        # Created with their mode once; an existing directory is never chmodded again.
        make_directory(layout.root)
        for relative in (*plan.directories, "config", "data", "logs"):
            try:
                directory = inside(layout.root, relative)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            make_directory(directory)
        for file in plan.files:
            try:
                target = inside(layout.config_dir, file.relative_path)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            make_directory(target.parent)
            write_atomic(target, file.content, file.mode)

    async def _run_init_steps(self, layout: NodeLayout, plan: NodePlan) -> None:
        for step in plan.init_steps:
            try:
                marker = inside(layout.root, step.creates)
            except UnsafePath as exc:
                raise ApplyError(str(exc)) from None
            if marker.exists():
                continue
            if step.random_hex_bytes:
                make_directory(marker.parent)
                write_atomic(marker, secrets.token_hex(step.random_hex_bytes), 0o600)
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
        write_atomic(layout.root / "applied.json", json.dumps(data, sort_keys=True))

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
            self._note_restarts(node, name, unit)
            metrics: dict[str, object] = {}
            message = None
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

    def _note_restarts(self, node: AssignedNodeSpec, name: str, unit: UnitStatus) -> None:
        seen = self._restarts_seen.get(name)
        self._restarts_seen[name] = unit.restarts
        down = crashed(unit)
        if seen is not None and unit.restarts > seen:
            self._events.append(
                RuntimeEvent(
                    node_id=node.node_id,
                    type=RuntimeEventType.NODE_PROCESS_RESTARTED,
                    level=EventLevel.WARN,
                    message=f"{name} exited ({unit.result or 'unknown'}) and was restarted",
                    payload={"unit": name, "restarts": unit.restarts, "result": unit.result},
                )
            )
        elif down and self._restarts_seen.get(f"{name}:crash") != 1:
            self._events.append(
                RuntimeEvent(
                    node_id=node.node_id,
                    type=RuntimeEventType.NODE_PROCESS_CRASHED,
                    level=EventLevel.ERROR,
                    message=f"{name} stopped unexpectedly ({unit.result or 'unknown'})",
                    payload={"unit": name, "result": unit.result},
                )
            )
        self._restarts_seen[f"{name}:crash"] = 1 if down else 0

    # ---- teardown ---------------------------------------------------------------------------

    async def teardown(self, node: AssignedNodeSpec) -> None:
        """Stop and remove the node's units; remove its directory unless data is retained."""
        try:
            await self._teardown(node)
        except DriverError as exc:
            raise ApplyError(str(exc)) from None
        except OSError as exc:
            raise ApplyError(os_error_text(exc)) from None
        finally:
            self._driver_problems()

    async def _teardown(self, node: AssignedNodeSpec) -> None:
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
            await asyncio.to_thread(remove_node_directory, layout.root)


def remove_node_directory(root: Path) -> None:
    """Delete a node's directory and everything in it; ApplyError naming what could not go.

    A node directory that is a mount point (a volume given to the node) is emptied and the mount
    point is left: the data is gone as asked, and unmounting is the host's business.
    """

    def named(function: object, path: str, exc_info: object) -> None:
        # rmtree reports the full path here but may raise with a relative one.
        exc = sys.exc_info()[1]
        assert isinstance(exc, OSError)
        raise OSError(exc.errno, exc.strerror, path) from None

    try:
        if os.path.ismount(root):
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, onerror=named)
                else:
                    child.unlink()
            log.info("teardown.mount_point_left", path=str(root))
        else:
            shutil.rmtree(root, onerror=named)
    except OSError as exc:
        raise ApplyError(f"cannot remove the node's data: {os_error_text(exc)}") from None


def os_error_text(exc: OSError) -> str:
    """`<path>: <reason>` for an OSError, without a traceback."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason
