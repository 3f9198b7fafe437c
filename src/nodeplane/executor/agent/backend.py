"""The agent backend: plan a node's units from its spec, apply them through a driver, observe.

`plan.plan` is the pure diff (what a revision asks for vs. what is materialized); `AgentBackend`
is the thin shell that renders once per revision, observes, and performs the planned actions.
"""

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import httpx
import structlog

from nodeplane.chains.base import (
    ChainAdapter,
    ConfigFile,
    InitStep,
    NodeConfigError,
    NodeLayout,
    NodePlan,
    PortDef,
    ProcessPlan,
    RenderContext,
)
from nodeplane.executor.agent import port_owners
from nodeplane.executor.agent.driver import (
    UNIT_PREFIX,
    UNIT_SUFFIX,
    ActiveState,
    Driver,
    DriverError,
    Stamp,
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
from nodeplane.executor.agent.plan import (
    PORTS_FILE,
    ActionKind,
    ObservedNode,
    ObservedUnit,
    RenderedNode,
    plan,
)
from nodeplane.executor.agent.port_range import PortRange
from nodeplane.executor.agent.port_recovery import recover_ports
from nodeplane.executor.agent.ports import (
    NoFreePort,
    PortsFileError,
    allocate_ports,
    ports_in_use,
    ports_text,
    read_ports,
)
from nodeplane.executor.agent.statefile import (
    FileKey,
    file_key,
    make_directory,
    move_aside,
    settled,
    write_atomic,
)
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

# How long one listing of the driver's units serves every node's reconcile (_all_units).
UNITS_LISTING_MAX_AGE_S = 1.0
# Where agents before stamped unit definitions recorded what they applied; read for adoption only.
LEGACY_MARKER = "applied.json"

BinaryResolver = Callable[[ChainAdapter, str, str, str], Path]
"""(adapter, role, client, version) -> executable path; raises ApplyError when unavailable."""


@dataclass(frozen=True)
class Rendering:
    """One revision of a node, rendered once: ports allocated and binaries resolved (I/O) here.

    Cached per node and revision, so neither the next apply nor any report renders again.
    """

    node_id: UUID
    revision: int
    restart_generation: int
    desired: DesiredState
    layout: NodeLayout
    plan: NodePlan
    units: Mapping[str, UnitSpec]  # by unit name, without a stamp
    files: Mapping[str, ConfigFile]  # by path relative to the node root (ports.json included)
    directories: tuple[str, ...]  # relative to the node root, "." is the root itself
    # What the driver shows for each unit as installed with a stamp: (unit, stamp) -> text.
    # Rendering it (a unit file, for the checks) on every resync was a measurable cost.
    definition_texts: dict[tuple[str, Stamp | None], str] = field(
        default_factory=dict, compare=False
    )

    @property
    def init_steps(self) -> dict[str, InitStep]:
        return {step.name: step for step in self.plan.init_steps}

    @functools.cached_property
    def _wanted(self) -> RenderedNode:
        return RenderedNode(
            revision=self.revision,
            restart_generation=self.restart_generation,
            desired=self.desired,
            units=tuple(self.units),
            directories=self.directories,
            files={path: digest(f.content) for path, f in self.files.items()},
            init_steps=tuple(self.init_steps),
        )

    def wanted(self) -> RenderedNode:
        """The pure view `plan` compares with what is observed (built once: it hashes files)."""
        return self._wanted


def digest(content: str | bytes) -> str:
    """SHA-256 of a file's content."""
    return hashlib.sha256(content.encode() if isinstance(content, str) else content).hexdigest()


def crashed(unit: UnitStatus) -> bool:
    """Whether the unit is down after an exit it did not ask for (failed, or inactive unclean)."""
    return unit.active_state is ActiveState.FAILED or (
        unit.active_state is ActiveState.INACTIVE and unit.result not in (None, "", "success")
    )


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
        port_range: PortRange | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port_range = port_range  # the agent's [ports]: where new ports come from
        self.restart_delay_s = restart_delay_s  # for every unit: see UnitSpec
        self.stable_after_s = stable_after_s
        self.driver = driver
        self.adapters = {a.chain: a for a in adapters}
        self._resolve_binary = resolve_binary
        self._capabilities = capabilities
        self._events: list[RuntimeEvent] = []
        self._restarts_seen: dict[str, int] = {}
        self._crash_seen: dict[str, bool] = {}  # a crash event was sent for the unit's current fall
        # Nodes are rendered side by side (per-node reconcile, in threads): choosing a node's
        # ports reads every other node's, so two choices must not interleave.
        self._ports_lock = threading.Lock()
        self._node_ids: dict[str, UUID] = {}  # node name -> id, for events the driver raises
        self._rendered: dict[str, Rendering] = {}  # node name -> its latest rendered revision
        self._units: list[str] | None = None  # the driver's last unit listing (_all_units)
        self._units_at = 0.0
        self._units_generation = 0  # bumped by every install and remove
        self._units_lock = asyncio.Lock()
        self._digests: dict[Path, tuple[FileKey, str]] = {}  # config files: _digest_of
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

    def _rendering(self, node: AssignedNodeSpec) -> Rendering:
        """The node's revision rendered: from the cache, else rendered now (once per revision)."""
        cached = self._rendered.get(node.name)
        same = cached is not None and cached.node_id == node.node_id
        if cached is not None and same and cached.revision == node.revision:
            return cached
        assert node.spec is not None
        layout, rendered = self._render(node)
        units = {u.name: u for u in (self._unit(node, layout, p) for p in rendered.processes)}
        files = {f"config/{f.relative_path}": f for f in rendered.files}
        try:
            for path in files:
                inside(layout.root, path)
            for step in rendered.init_steps:
                inside(layout.root, step.creates)
            directories = [".", *rendered.directories, "config", "data", "logs"]
            for directory in directories:
                inside(layout.root, directory)
        except UnsafePath as exc:
            raise ApplyError(str(exc)) from None
        ports = read_ports(layout.root / PORTS_FILE)  # just written by _render
        files[PORTS_FILE] = ConfigFile(PORTS_FILE, ports_text(ports or {}), 0o600)
        rendering = Rendering(
            node_id=node.node_id,
            revision=node.revision,
            restart_generation=node.spec.restart_generation,
            desired=node.spec.desired_state,
            layout=layout,
            plan=rendered,
            units=units,
            files=files,
            directories=tuple(dict.fromkeys(directories)),
        )
        self._rendered[node.name] = rendering
        return rendering

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
            if current is None:
                # No ports file (a new node, or one deleted by hand): the config files may
                # still say which ports the node's processes use.
                current = recover_ports(adapter, spec, ctx, wanted_ports)
                if current:
                    log.warning("ports.recovered", node=node.name, ports=current)
            with self._ports_lock:
                ports = allocate_ports(
                    ports_file,
                    wanted_ports,
                    ports_in_use(nodes_root(self.data_dir), node.name),
                    current=current,
                    port_range=self.port_range,
                )
            ctx = RenderContext(node_name=node.name, layout=layout, ports=ports, binaries=binaries)
            return layout, adapter.render(spec, ctx)
        except (NodeConfigError, NoFreePort) as exc:
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
            restart_delay_s=self.restart_delay_s,
            stable_after_s=self.stable_after_s,
        )

    def log_file(self, node: AssignedNodeSpec, role: str) -> Path:
        """`<node>/logs/<role>.log`: both drivers append the process's output there (the
        systemd unit with `StandardOutput=append:`, the supervisor by redirection)."""
        if node.spec is None or role not in node.spec.clients:
            raise ValueError(f"node {node.name} has no role {role!r}")
        try:
            return inside(self._layout(node.name).root, f"logs/{role}.log")
        except UnsafePath as exc:
            raise ValueError(str(exc)) from None

    # ---- apply ------------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Let the driver apply restart policies (the built-in supervisor needs this tick)."""
        try:
            for exit_ in await self.driver.supervise():
                log.info("unit.exited", exit=str(exit_))
        finally:
            self._driver_problems()

    @contextlib.contextmanager
    def _node_errors(self) -> Iterator[None]:
        """Driver and OS failures of one node's apply or teardown as that node's ApplyError (a
        full or read-only disk, say: never the agent's end); then the driver's own events."""
        try:
            yield
        except DriverError as exc:
            raise ApplyError(str(exc)) from None
        except OSError as exc:
            raise ApplyError(os_error_text(exc)) from None
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
        with self._node_errors():
            await self._apply(node)

    async def _apply(self, node: AssignedNodeSpec) -> None:
        assert node.spec is not None
        if node.spec.desired_state is DesiredState.RUNNING and await self._move_taken_ports(node):
            # Rendered again for the new ports, so the node's files (and client) get them.
            self._rendered.pop(node.name, None)
        rendering = await asyncio.to_thread(self._rendering, node)
        observed = await self._observe_materialized(node.name, rendering)
        actions = plan(rendering.wanted(), observed)
        # Before anything changes: a process about to start must find its ports free.
        await self._check_ports(
            node, [a.target for a in actions if a.kind in (ActionKind.START, ActionKind.RESTART)]
        )
        root = rendering.layout.root
        for action in actions:
            log.info("node.action", node=node.name, action=action.kind.value, target=action.target)
            name = action.target
            match action.kind:
                case ActionKind.CREATE_DIRECTORY:
                    # Created with its mode once; an existing directory is never chmodded again.
                    await asyncio.to_thread(make_directory, inside(root, name))
                case ActionKind.WRITE_FILE:
                    await asyncio.to_thread(self._write_file, node, rendering, name)
                case ActionKind.RUN_INIT_STEP:
                    await self._run_init_step(rendering.layout, rendering.init_steps[name])
                case ActionKind.INSTALL:
                    stamp = dataclasses.replace(
                        rendering.wanted().stamp, pending_restart=action.pending
                    )
                    unit = dataclasses.replace(rendering.units[name], stamp=stamp)
                    try:
                        await self.driver.install(unit)
                    finally:
                        self._units_changed()
                case ActionKind.START:
                    await self.driver.start(name)
                case ActionKind.STOP:
                    await self.driver.stop(name)
                case ActionKind.RESTART:
                    await self.driver.restart(name)
                case ActionKind.REMOVE:
                    try:
                        await self.driver.remove(name)
                    finally:
                        self._units_changed()
        if observed.legacy is not None:
            # Every unit carries its stamp now: what an older agent recorded is not needed.
            with contextlib.suppress(OSError):
                (root / LEGACY_MARKER).unlink()

    async def _observe_materialized(self, name: str, rendering: Rendering) -> ObservedNode:
        """What is on the host for the node: read-only (the process driver may note an exit)."""
        units: dict[str, ObservedUnit] = {}
        for unit_name_ in sorted({*rendering.units, *await self._node_units(name)}):
            status = await self.driver.status(unit_name_, usage=False)
            if not status.exists:
                continue
            current = self._definition_text(rendering, unit_name_, status.stamp) == (
                status.definition
            )
            units[unit_name_] = ObservedUnit(
                running=status.active_state in (ActiveState.ACTIVE, ActiveState.ACTIVATING),
                crashed=crashed(status),
                stopping=status.active_state is ActiveState.DEACTIVATING,
                definition_current=current,
                stamp=status.stamp,
            )
        return await asyncio.to_thread(self._observe_files, rendering, units)

    def _definition_text(self, rendering: Rendering, name: str, stamp: Stamp | None) -> str | None:
        """What the driver would show for the rendered unit `name` with `stamp` (None if the
        revision has no such unit)."""
        wanted = rendering.units.get(name)
        if wanted is None:
            return None
        text = rendering.definition_texts.get((name, stamp))
        if text is None:
            text = self.driver.definition_text(dataclasses.replace(wanted, stamp=stamp))
            rendering.definition_texts[(name, stamp)] = text
        return text

    def _digest_of(self, path: Path) -> str:
        """SHA-256 of the file, hashed again only when it changed (or may have): every resync
        checks every node's config files for drift, and they almost never change."""
        st = path.stat()
        cached = self._digests.get(path)
        if cached is not None and cached[0] == file_key(st):
            return cached[1]
        value = digest(path.read_bytes())
        if settled(st):
            self._digests[path] = (file_key(st), value)
        else:
            self._digests.pop(path, None)
        return value

    def _observe_files(self, rendering: Rendering, units: dict[str, ObservedUnit]) -> ObservedNode:
        root = rendering.layout.root
        files = {}
        for path in rendering.files:
            try:
                files[path] = self._digest_of(root / path)
            except OSError:
                continue
        return ObservedNode(
            units=units,
            directories=frozenset(d for d in rendering.directories if (root / d).is_dir()),
            files=files,
            init_done=frozenset(
                step.name for step in rendering.plan.init_steps if (root / step.creates).exists()
            ),
            legacy=legacy_stamp(root / LEGACY_MARKER),
        )

    def _write_file(self, node: AssignedNodeSpec, rendering: Rendering, path: str) -> None:
        file = rendering.files[path]
        target = inside(rendering.layout.root, path)
        if path == PORTS_FILE:
            try:
                read_ports(target)
            except PortsFileError as exc:
                self._state_rebuilt(node, exc, move_aside(target))
        make_directory(target.parent)
        write_atomic(target, file.content, file.mode)

    async def _run_init_step(self, layout: NodeLayout, step: InitStep) -> None:
        marker = inside(layout.root, step.creates)
        if step.random_hex_bytes:
            make_directory(marker.parent)
            write_atomic(marker, secrets.token_hex(step.random_hex_bytes), 0o600)
            return
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

    async def _node_units(self, name: str) -> list[str]:
        # Roles never contain '-', so `nodeplane-a-node` is node a's, not node "a-node"'s prefix.
        prefix = f"{UNIT_PREFIX}{name}-"
        return [
            u
            for u in await self._all_units()
            if u.startswith(prefix) and "-" not in u[len(prefix) :].removesuffix(".service")
        ]

    async def _all_units(self) -> list[str]:
        """Every unit the driver knows, listed at most once per UNITS_LISTING_MAX_AGE_S.

        Each node's reconcile looks for its units (a role its spec dropped, a teardown): one
        listing per node made a resync pass cost nodes x units (a `systemctl list-units` per
        node on systemd). Nodes reconciled side by side share one listing, and whoever lists
        while another does waits for that one. Installs and removes through this backend forget
        it, so a listing never misses a unit the agent itself just made.
        """
        async with self._units_lock:
            now = time.monotonic()
            if self._units is None or now - self._units_at > UNITS_LISTING_MAX_AGE_S:
                generation = self._units_generation
                units = await self.driver.list_units()
                if generation == self._units_generation:
                    self._units, self._units_at = units, now
                return units
            return self._units

    def _units_changed(self) -> None:
        """A unit was installed or removed: the next look lists them again."""
        self._units = None
        self._units_generation += 1

    # ---- observe ----------------------------------------------------------------------------

    async def observe(self, node: AssignedNodeSpec) -> list[ObservedProcess]:
        """Each process's unit state joined with its probe, plus CPU, memory and disk.

        Never renders (no port allocation, no binary lookup on the report path): it probes what
        the last apply rendered, or reports the driver's view alone before the first apply.
        """
        spec = node.spec
        if spec is None:
            return []
        self._node_ids[node.name] = node.node_id
        rendering = self._rendered.get(node.name)
        if rendering is None or rendering.node_id != node.node_id:
            return await self._observe_units(node, spec.desired_state)
        layout, plan = rendering.layout, rendering.plan
        adapter = self._adapter(spec)
        disk = shutil.disk_usage(layout.data_dir) if layout.data_dir.exists() else None
        observed: list[ObservedProcess] = []
        for process in plan.processes:
            name = unit_name(node.name, process.role)
            unit = await self.driver.status(name)
            status = process_status(unit, spec.desired_state)
            message = await self._exit_report(node, name, process.role, unit, status)
            metrics: dict[str, object] = {}
            if status is ProcessStatus.RUNNING:
                probe = await adapter.probe(process, self._http)
                status = probe.status
                message = probe.message
                metrics = {
                    "height": probe.height,
                    "network_height": probe.network_height,
                    "peers": probe.peers,
                    "sync_progress": probe.sync_progress,
                    "client_version": probe.client_version,
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

    async def _observe_units(
        self, node: AssignedNodeSpec, desired: DesiredState
    ) -> list[ObservedProcess]:
        """The node's units as the driver reports them, unprobed (nothing rendered yet)."""
        observed = []
        prefix = f"{UNIT_PREFIX}{node.name}-"
        for name in await self._node_units(node.name):
            unit = await self.driver.status(name)
            if not unit.exists:
                continue
            role = name.removeprefix(prefix).removesuffix(UNIT_SUFFIX)
            status = process_status(unit, desired)
            message = await self._exit_report(node, name, role, unit, status)
            observed.append(
                ObservedProcess(
                    role=role,
                    status=status,
                    message=storable_excerpt(message, MAX_MESSAGE_LENGTH) if message else None,
                    pid=unit.main_pid or None,
                    cpu_seconds=unit.cpu_seconds,
                    memory_bytes=unit.memory_bytes,
                )
            )
        return observed

    async def _exit_report(
        self,
        node: AssignedNodeSpec,
        name: str,
        role: str,
        unit: UnitStatus,
        status: ProcessStatus,
    ) -> str | None:
        """Events for the unit's exits since the last look, and why it is down (None if up).

        The last run's exit line and output are read from the unit's log only when there is
        something to tell: the unit is down, was restarted, or crashed since the last look.
        """
        down = status is ProcessStatus.ERROR or waiting_to_restart(unit)
        restarted = unit.restarts > self._restarts_seen.get(name, unit.restarts)
        run = None
        if down or restarted or (crashed(unit) and not self._crash_seen.get(name)):
            log_file = self._layout(node.name).root / "logs" / f"{role}.log"
            run = last_run(await asyncio.to_thread(read_tail, log_file))
        self._note_restarts(node, name, unit, run)
        if not down:
            return None
        taken: list[port_owners.TakenPort] = []
        if status is ProcessStatus.ERROR:  # not while restarting: a bind test could race
            taken = await asyncio.to_thread(self._taken_ports, node, {role})
        return exit_message(unit, run, [t.describe() for t in taken])

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
        if not roles:
            return []
        root = self._layout(node.name).root
        try:
            ports = read_ports(root / PORTS_FILE)
            defs = [d for d in self._adapter(node.spec).ports(node.spec) if d.role in roles]
        except (PortsFileError, ApplyError, NodeConfigError, KeyError):
            return []  # unreadable (rebuilt by the next render), or the render says what is wrong
        # The node's own process (its unit's record lost, adopted by the next start) is no
        # other program.
        return port_owners.taken_ports(ports or {}, defs, own_dir=root)

    async def _down_units(
        self, node: AssignedNodeSpec, names: Sequence[str]
    ) -> dict[str, UnitStatus]:
        """Those of the units `names` that are down and stay so until the agent starts them.

        Not a unit waiting for its automatic restart: the driver may start it any moment, and
        its own process binding its ports then is no other program. Keyed by role.
        """
        down = {}
        for name in names:
            unit = await self.driver.status(name, usage=False)
            if unit.main_pid is None and unit.active_state in _AT_REST:
                role = name.removeprefix(f"{UNIT_PREFIX}{node.name}-").removesuffix(UNIT_SUFFIX)
                down[role] = unit
        return down

    async def _move_taken_ports(self, node: AssignedNodeSpec) -> bool:
        """Give the node new ports for those another program took while its process was down.

        Only what `port_owners.movable` allows: loopback ports at once, public ones when the
        user restarts the node (a unit's stamp is behind the spec's restart generation); before
        the files are rendered, so the client gets the new ones. True if a port moved.
        """
        spec = node.spec
        assert spec is not None
        try:
            defs = self._adapter(spec).ports(spec)
        except (ApplyError, NodeConfigError, KeyError):
            return False  # the render that follows says what is wrong
        roles = {d.role for d in defs}
        down = await self._down_units(node, [unit_name(node.name, r) for r in sorted(roles)])
        if not down:
            return False  # every unit runs (or is about to): no other program has their ports
        taken = await asyncio.to_thread(self._taken_ports, node, set(down))
        if not taken:
            return False
        legacy = legacy_stamp(self._layout(node.name).root / LEGACY_MARKER)
        stamps = [u.stamp or legacy for u in down.values() if u.exists]
        restart_requested = any(
            s is not None and s.restart_generation < spec.restart_generation for s in stamps
        )
        moved = [t for t in taken if port_owners.movable(t, restart_requested=restart_requested)]
        if not moved:
            return False
        ports = await asyncio.to_thread(self._reallocate_ports, node, defs, {t.port for t in moved})
        for t in moved:
            log.warning(
                "ports.moved", node=node.name, key=t.key, old=t.port, new=ports.get(t.key),
                reason=t.describe(),
            )  # fmt: skip
        return True

    def _reallocate_ports(
        self, node: AssignedNodeSpec, defs: Sequence[PortDef], avoid: set[int]
    ) -> dict[str, int]:
        """The node's ports again, none of `avoid`: the others stay as they are."""
        ports_file = self._layout(node.name).root / PORTS_FILE
        with self._ports_lock:
            elsewhere = ports_in_use(nodes_root(self.data_dir), node.name) | avoid
            return allocate_ports(
                ports_file,
                defs,
                elsewhere,
                current=read_ports(ports_file),
                port_range=self.port_range,
            )

    async def _check_ports(self, node: AssignedNodeSpec, names: Sequence[str]) -> None:
        """ApplyError naming port and holder if a unit about to start would find one taken."""
        if not names:
            return
        down = await self._down_units(node, names)
        if not down:
            return
        taken = await asyncio.to_thread(self._taken_ports, node, set(down))
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
        with self._node_errors():
            await self._teardown(node)

    async def _teardown(self, node: AssignedNodeSpec) -> None:
        self._rendered.pop(node.name, None)
        layout = self._layout(node.name)
        for path in [p for p in self._digests if p.is_relative_to(layout.root)]:
            self._digests.pop(path, None)
        for name in await self._node_units(node.name):
            try:
                await self.driver.remove(name)
            finally:
                self._units_changed()
        if node.retain_data:
            return
        if layout.root.exists():
            if (
                layout.root.is_symlink()
                or layout.root.resolve().parent != nodes_root(self.data_dir).resolve()
            ):
                raise ApplyError(f"refusing to remove {layout.root}: not a plain node directory")
            await asyncio.to_thread(remove_node_directory, layout.root)


def legacy_stamp(path: Path) -> Stamp | None:
    """What an older agent recorded in applied.json, as a stamp; None if absent or unreadable."""
    try:
        data = json.loads(path.read_text())
        return Stamp(int(data["revision"]), int(data.get("restartGeneration", 0)))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


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
