"""Ethereum mainnet, geth + lighthouse, as the agent would run it: units, layout, one JWT secret.

geth and lighthouse cannot be installed here, so nothing runs: the spec goes through the real
adapter and the agent backend (render, files, init steps, units), the units are written into a
sandboxed systemd with the node stopped, and systemd itself checks them. The binaries are dummy
executables in a temporary directory (`systemd-analyze verify` wants the ExecStart= file to exist).
"""

import dataclasses
import json
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeplane.chains.base import ChainAdapter, NodeLayout, NodePlan
from nodeplane.chains.ethereum import ETHEREUM
from nodeplane.executor.agent.backend import AgentBackend
from nodeplane.executor.agent.driver import Driver, Stamp, UnitSpec
from nodeplane.executor.agent.process_driver import ProcessDriver
from nodeplane.executor.agent.systemd import SystemdDriver
from nodeplane.executor.agent.units import render_unit
from nodeplane.protocol import AssignedNodeSpec, ExecutorCapabilities, NodeSpec
from tests.support.sandbox import SystemdSandbox

NAME = "eth-main"
EXECUTION_UNIT = f"nodeplane-{NAME}-execution.service"
CONSENSUS_UNIT = f"nodeplane-{NAME}-consensus.service"
GIB = 2**30


def mainnet(**extra: object) -> AssignedNodeSpec:
    spec = NodeSpec.model_validate(
        {
            "chain": "ethereum",
            "network": "mainnet",
            "clients": {
                "execution": {"name": "geth", "version": "1.14.12"},
                "consensus": {"name": "lighthouse", "version": "5.3.0"},
            },
            "resources": {"cpuLimit": "2", "memoryLimit": "8Gi"},
            "agent": {"restartPolicy": "always"},
            **extra,
        }
    )
    return AssignedNodeSpec(node_id=uuid.uuid4(), name=NAME, revision=1, spec=spec)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """Executables named like the clients; never run."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("geth", "lighthouse"):
        exe = directory / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def make_backend(data_dir: Path, bin_dir: Path, driver: Driver) -> AgentBackend:
    def resolve(adapter: ChainAdapter, role: str, client: str, version: str) -> Path:
        return bin_dir / client

    return AgentBackend(
        data_dir=data_dir,
        driver=driver,
        adapters=[ETHEREUM],
        resolve_binary=resolve,
        capabilities=lambda: ExecutorCapabilities(chains=[]),
    )


def rendered(
    backend: AgentBackend, node: AssignedNodeSpec
) -> tuple[NodeLayout, NodePlan, dict[str, UnitSpec]]:
    """The plan and unit specs exactly as `AgentBackend.apply` builds them."""
    layout, plan = backend._render(node)
    units = {p.role: backend._unit(node, layout, p) for p in plan.processes}
    return layout, plan, units


def exec_words(unit_text: str) -> list[str]:
    """The ExecStart= words as systemd reads them back (quotes, `$$` and `%%` undone)."""
    line = next(ln for ln in unit_text.splitlines() if ln.startswith("ExecStart="))
    words = re.findall(r'"((?:[^"\\]|\\.)*)"', line.removeprefix("ExecStart="))
    return [re.sub(r"\\(.)", r"\1", w).replace("$$", "$").replace("%%", "%") for w in words]


def setting(unit_text: str, key: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in unit_text.splitlines() if ln.startswith(f"{key}=")]


def flag(argv: list[str], name: str) -> str:
    values = [w.split("=", 1)[1] for w in argv if w.startswith(f"{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


# ---- rendering (pure) -----------------------------------------------------------------------


def test_geth_and_lighthouse_units(tmp_path: Path, bin_dir: Path) -> None:
    data_dir = tmp_path / "data"
    backend = make_backend(data_dir, bin_dir, ProcessDriver(data_dir / "supervisor"))
    layout, plan, units = rendered(backend, mainnet())
    root = data_dir / "nodes" / NAME
    assert layout.root == root
    assert sorted(units) == ["consensus", "execution"]
    assert units["execution"].name == EXECUTION_UNIT and units["consensus"].name == CONSENSUS_UNIT
    ports = json.loads((root / "ports.json").read_text())

    geth = render_unit(units["execution"])
    lighthouse = render_unit(units["consensus"])

    # ExecStart: exactly the adapter's argv, one word each, starting with the resolved binary.
    geth_argv, lh_argv = exec_words(geth), exec_words(lighthouse)
    argv_of = {p.role: list(p.argv) for p in plan.processes}
    assert geth_argv == argv_of["execution"] and lh_argv == argv_of["consensus"]
    assert geth_argv[:3] == [str(bin_dir / "geth"), "--mainnet", f"--datadir={root}/data/execution"]
    assert lh_argv[:4] == [
        str(bin_dir / "lighthouse"),
        "beacon_node",
        "--network=mainnet",
        f"--datadir={root}/data/consensus",
    ]
    # The Engine API: lighthouse drives geth's authrpc port on loopback, both with one secret.
    jwt = root / "config" / "jwt.hex"
    assert flag(geth_argv, "--authrpc.jwtsecret") == str(jwt)
    assert flag(lh_argv, "--execution-jwt") == str(jwt)
    assert flag(geth_argv, "--authrpc.port") == str(ports["execution.engine"])
    assert flag(lh_argv, "--execution-endpoint") == f"http://127.0.0.1:{ports['execution.engine']}"
    assert flag(geth_argv, "--http.port") == str(ports["execution.http"])
    assert flag(lh_argv, "--http-port") == str(ports["consensus.http"])
    assert len(set(ports.values())) == len(ports), "every port of the node is distinct"

    for text, role, stop_timeout in (
        (geth, "execution", "300s"),
        (lighthouse, "consensus", "120s"),
    ):
        # geth flushes its caches on SIGTERM and may take minutes; lighthouse gets the default.
        assert setting(text, "KillSignal") == ["SIGTERM"], role
        assert setting(text, "TimeoutStopSec") == [stop_timeout], role
        assert setting(text, "Restart") == ["always"], role
        assert setting(text, "RestartSec") == ["5s"], role
        # Resources apply per process: each client may use 2 cores and 8 GiB.
        assert setting(text, "CPUQuota") == ["200%"], role
        assert setting(text, "MemoryMax") == [str(8 * GIB)], role
        assert setting(text, "WorkingDirectory") == [f"{root}/data/{role}"], role
        log = f"append:{root}/logs/{role}.log"
        assert setting(text, "StandardOutput") == setting(text, "StandardError") == [log], role
        assert setting(text, "Environment") == [], role
        assert setting(text, "Type") == ["simple"], role

    # No config files for these clients; a data directory per role; the JWT as an init step.
    assert plan.files == ()
    assert set(plan.directories) >= {"config", "data", "data/execution", "data/consensus"}
    assert [(s.name, s.creates, s.random_hex_bytes) for s in plan.init_steps] == [
        ("jwt-secret", "config/jwt.hex", 32)
    ]


def test_without_limits_and_with_the_default_policy(tmp_path: Path, bin_dir: Path) -> None:
    data_dir = tmp_path / "data"
    backend = make_backend(data_dir, bin_dir, ProcessDriver(data_dir / "supervisor"))
    node = mainnet(resources={}, agent={})
    _, _, units = rendered(backend, node)
    for unit in units.values():
        text = render_unit(unit)
        assert setting(text, "Restart") == ["on-failure"]
        assert setting(text, "CPUQuota") == [] and setting(text, "MemoryMax") == []


@pytest.mark.anyio
async def test_jwt_secret_is_created_once_and_shared(tmp_path: Path, bin_dir: Path) -> None:
    """The process driver writes definitions only (the node is stopped): nothing runs."""
    data_dir = tmp_path / "data"
    backend = make_backend(data_dir, bin_dir, ProcessDriver(data_dir / "supervisor"))
    node = mainnet(desiredState="stopped")
    await backend.apply(node)
    jwt = data_dir / "nodes" / NAME / "config" / "jwt.hex"
    secret = jwt.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert stat.S_IMODE(jwt.stat().st_mode) == 0o600

    await backend.apply(node)  # a later apply keeps the secret both clients already share
    assert jwt.read_text() == secret
    for unit in (EXECUTION_UNIT, CONSENSUS_UNIT):
        status = await backend.driver.status(unit)
        assert status.exists and status.main_pid is None
        assert str(jwt) in (status.definition or "")
    assert not list(jwt.parent.glob(".*.tmp")), "no temporary secret left behind"


# ---- systemd reads them as meant ------------------------------------------------------------


@pytest.fixture
def sandboxed(
    systemd_sandbox: SystemdSandbox, tmp_path: Path, bin_dir: Path
) -> Iterator[tuple[AgentBackend, SystemdSandbox]]:
    driver = SystemdDriver(
        systemd_sandbox.unit_dir, systemd_sandbox.prefix, proc_dir=systemd_sandbox.proc_dir
    )
    yield make_backend(tmp_path / "data", bin_dir, driver), systemd_sandbox
    for unit in (EXECUTION_UNIT, CONSENSUS_UNIT):
        (systemd_sandbox.unit_dir / unit).unlink(missing_ok=True)
    systemd_sandbox.systemctl("daemon-reload", check=False)


@pytest.mark.anyio
async def test_units_pass_systemd_analyze_verify(
    sandboxed: tuple[AgentBackend, SystemdSandbox],
) -> None:
    backend, sandbox = sandboxed
    node = mainnet(desiredState="stopped")
    await backend.apply(node)
    _, _, units = rendered(backend, node)

    for role, unit in units.items():
        on_disk = (sandbox.unit_dir / unit.name).read_text()
        # The agent stamps what it applied into the unit (systemd ignores X- keys).
        stamped = dataclasses.replace(unit, stamp=Stamp(revision=1, restart_generation=0))
        assert on_disk == render_unit(stamped), role
        verify = sandbox.exec(
            "systemd-analyze", "verify", f"/run/systemd/system/{unit.name}", check=False
        )
        assert verify.returncode == 0, verify.stderr
        assert unit.name not in verify.stdout + verify.stderr, verify.stdout + verify.stderr

        shown = dict(
            line.split("=", 1)
            for line in sandbox.systemctl(
                "show",
                "-p",
                "ActiveState,KillSignal,TimeoutStopUSec,Restart,CPUQuotaPerSecUSec,MemoryMax,"
                "WorkingDirectory,ExecStart",
                "--",
                unit.name,
            ).stdout.splitlines()
        )
        assert shown["ActiveState"] == "inactive", role  # stopped: installed, never started
        assert shown["KillSignal"] == "15", role
        assert shown["TimeoutStopUSec"] == {"execution": "5min", "consensus": "2min"}[role]
        assert shown["Restart"] == "always", role
        assert shown["CPUQuotaPerSecUSec"] == "2s", role
        assert shown["MemoryMax"] == str(8 * GIB), role
        assert shown["WorkingDirectory"] == str(unit.process.working_dir), role
        argv = re.search(r"argv\[\]=([^;]*) ;", shown["ExecStart"])
        assert argv is not None, shown["ExecStart"]
        assert argv.group(1).split() == list(unit.process.argv), role
