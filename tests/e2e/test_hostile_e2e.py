"""Hostile input on its way to the agent: refused, or quoted so it stays one argv word.

Nothing a user types may reach a shell, escape a unit file's quoting or point a file operation
outside the node's directory (DESIGN §7). The agent is checked end to end with a real litecoind
(whose own debug.log shows the words it was given), from the control plane's refusals, and from
specs planted in its disk cache that the control plane never saw.
"""

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nodeplane.executor.agent.layout import UnsafePath, inside, node_layout, nodes_root
from tests.e2e.conftest import _cleanup_units, _online, wait_for
from tests.e2e.litecoin_nodes import (
    LogWatcher,
    cmdline,
    create_node,
    executor_id,
    feed,
    litecoin_spec,
    node_pids,
    single_pid,
    start_count,
    tree,
    unit_definition,
    wait_phase,
)
from tests.support.agent import AgentProcess
from tests.support.fleet import CREATE_NODE, Org
from tests.support.gql import GraphQLError
from tests.support.server import ServerProcess


def _pwned(token: str) -> list[Path]:
    """Files a shell, had one run the hostile values, would have created."""
    return sorted(Path("/tmp").glob(f"pwned-{token}*"))


def _new_paths_outside(
    before: set[Path], after: set[Path], agent: AgentProcess, allowed_nodes: list[str]
) -> list[Path]:
    """Paths created under the agent's workdir outside the given nodes' directories and the
    agent's own records (held specs, supervisor state)."""
    allowed = [agent.node_dir(n) for n in allowed_nodes]
    allowed += [agent.data_dir / "state", agent.data_dir / "supervisor"]
    return [
        path
        for path in sorted(after - before)
        if path != nodes_root(agent.data_dir)
        and not any(path == a or path.is_relative_to(a) for a in allowed)
    ]


def _systemd_units(agent: AgentProcess) -> set[str]:
    if agent.driver != "systemd":
        return set()
    assert agent.sandbox is not None
    return {p.name for p in agent.sandbox.unit_dir.iterdir()}


# ---- hostile override values reach litecoind as single words ---------------------------------


def hostile_flags(token: str, workdir: Path) -> list[str]:
    """Flags whose values carry shell syntax, systemd specifiers, quotes and unicode.

    `-debugexclude` takes any text: litecoind warns "Unsupported logging category <value>" and
    runs, which shows in its debug.log exactly which words it got.
    """
    return [
        f"-debugexclude=$(touch /tmp/pwned-{token}-dollar)",
        f"-debugexclude=`touch /tmp/pwned-{token}-backtick`",
        f"-debugexclude=; touch /tmp/pwned-{token}-semicolon #",
        f"-debugexclude=$(touch {workdir}/pwned-{token})",
        "-debugexclude=%h\"x'y",
        '-debugexclude=%n %% ${HOME} $HOME \\ \\\\ "',
        "-debugexclude=a b  c",
        "-debugexclude=ünïcödé → 漢字 🚀",
        "-debugexclude=-",
    ]


def test_hostile_override_values_stay_single_words(e2e_org: Org, agent: AgentProcess) -> None:
    token = uuid.uuid4().hex[:10]
    flags = hostile_flags(token, agent.workdir)
    conf_value = f"$(touch /tmp/pwned-{token}-conf) `id` %h;x"
    before = tree(agent.workdir)
    units_before = _systemd_units(agent)

    node_id = create_node(
        e2e_org,
        agent,
        "hostile",
        overrides={"args": {"node": flags}, "files": {"node": {"assumevalid": conf_value}}},
    )
    running = wait_phase(e2e_org, node_id, "RUNNING")
    assert running["observed"]["processes"][0]["status"] == "running"

    # The kernel holds exactly the words we meant: each flag one argv word, unaltered.
    pid = single_pid(agent, "hostile")
    argv = cmdline(agent, pid)
    node_dir = agent.node_dir("hostile")
    assert argv == [
        "/usr/lib/litecoin/litecoind",
        f"-datadir={node_dir / 'data'}",
        f"-conf={node_dir / 'config' / 'litecoin.conf'}",
        "-printtoconsole=1",
        *flags,
    ]
    # ...and litecoind read each value whole.
    debug_log = (node_dir / "data" / "regtest" / "debug.log").read_text()
    for flag in flags:
        assert f"Unsupported logging category {flag}." in debug_log, flag
    conf = (node_dir / "config" / "litecoin.conf").read_text()
    assert f"\nassumevalid={conf_value}\n" in conf

    if agent.driver == "systemd":
        assert agent.sandbox is not None
        unit = "nodeplane-hostile-node.service"
        shown = agent.sandbox.systemctl("show", "-p", "ExecStart", "--", unit).stdout
        assert f"argv[]=/usr/lib/litecoin/litecoind -datadir={node_dir / 'data'}" in shown
        verify = agent.sandbox.exec(
            "systemd-analyze", "verify", f"/run/systemd/system/{unit}", check=False
        )
        assert verify.returncode == 0, verify.stderr
        assert unit not in verify.stdout + verify.stderr, verify.stdout + verify.stderr
        assert _systemd_units(agent) - units_before == {unit}
    else:
        record = json.loads(unit_definition(agent, "hostile").read_text())
        assert record["definition"]["argv"] == argv

    # No shell ran anything, and nothing was written outside the node's directory.
    assert _pwned(token) == []
    assert not (agent.workdir / f"pwned-{token}").exists()
    assert _new_paths_outside(before, tree(agent.workdir), agent, ["hostile"]) == []


# ---- the control plane refuses what must never reach an agent --------------------------------


def _error(call: Any) -> GraphQLError:
    with pytest.raises(GraphQLError) as info:
        call()
    return info.value


def test_control_plane_refuses_hostile_names_and_sizes(
    e2e_org: Org, agent: AgentProcess, e2e_server: ServerProcess
) -> None:
    """Typed errors, and the agent receives nothing: no held spec, no directory, no unit."""
    token = uuid.uuid4().hex[:10]
    ex_id = executor_id(e2e_org, agent)
    before = tree(agent.workdir)

    def create(name: str, **spec: Any) -> Any:
        return lambda: e2e_org.owner(
            CREATE_NODE,
            {"input": {"executorId": ex_id, "name": name, "spec": litecoin_spec(**spec)}},
        )

    names = ["../x", "..", "a/b", "x\ny", "", "A", "a" * 64, "a" * 100_000, "$(id)", "a%h"]
    for name in names:
        err = _error(create(name))
        assert err.code == "invalid_input" and err.extensions.get("field") == "name", name[:20]
    # NUL cannot even be stored: the request itself is refused.
    assert _error(create("a\x00b")).code == "bad_request"

    args_cases = {
        "newline": ["-debugexclude=a\nExecStart=/bin/sh"],
        "carriage return": ["-debugexclude=a\rb"],
        "line separator": ["-debugexclude=a\u2028b"],
        "absurdly long": ["-debugexclude=" + "x" * 10_000],
        "too many": [f"-debugexclude=c{i}" for i in range(65)],
        "managed datadir": [f"-datadir=/tmp/pwned-{token}"],
        "managed conf": ["-conf=/etc/passwd"],
        "managed notify": [f"-blocknotify=touch /tmp/pwned-{token}"],
        "managed debuglog": [f"-debuglogfile=/tmp/pwned-{token}.log"],
        "not a flag": ["$(id)"],
        # What the adapter declares (in the agent's capabilities) is refused up front as well.
        "asmap outside the node": ["-asmap=/etc/shadow"],
        "asmap up and out": ["-regtest.asmap=../../x"],
    }
    for what, args in args_cases.items():
        err = _error(create("fine", overrides={"args": {"node": args}}))
        assert err.code == "invalid_node_config", what
    nul = create("fine", overrides={"args": {"node": ["-debugexclude=a\x00b"]}})
    assert _error(nul).code == "bad_request"
    for what, files in {
        "newline in value": {"maxconnections": "1\nrpcpassword=x"},
        "managed key": {"blocknotify": f"touch /tmp/pwned-{token}"},
        "key with a path": {"../x": "1"},
        "'#' would cut the line short": {"assumevalid": "00#x"},
        "asmap file outside the node": {"asmap": "/etc/shadow"},
    }.items():
        err = _error(create("fine", overrides={"files": {"node": files}}))
        assert err.code == "invalid_node_config", what
    bad_version = {"node": {"name": "litecoind", "version": "../../bin/sh"}}
    assert _error(create("fine", clients=bad_version)).code == "invalid_node_config"

    # A body far beyond the limit is refused before it is parsed.
    response = httpx.post(
        f"{e2e_server.url}/graphql",
        content=b'{"query": "' + b" " * (4 << 20) + b'"}',
        headers={
            "authorization": f"Bearer {e2e_org.owner.token}",
            "content-type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "payload_too_large"

    # The agent heard of none of it (a few poll and reconcile cycles later).
    assert e2e_org.owner("{ nodes { items { id } } }")["nodes"]["items"] == []
    wait_for(lambda: _online(e2e_org, agent.name), timeout=10, what="agent online")
    held = agent.data_dir / "state" / "specs.json"
    assert not held.exists() or json.loads(held.read_text())["nodes"] == {}
    assert not (agent.data_dir / "nodes").exists() or not any((agent.data_dir / "nodes").iterdir())
    assert _new_paths_outside(before, tree(agent.workdir), agent, []) == []
    assert _pwned(token) == []


# ---- specs the control plane never saw, planted in the agent's disk cache ---------------------


def test_agent_refuses_hostile_specs_from_its_disk_cache(e2e_org: Org, agent: AgentProcess) -> None:
    """The executor validates again (DESIGN §7): a tampered `state/specs.json` with names that
    leave the nodes directory and managed flags pointing elsewhere is refused; the agent keeps
    running, reports the failures, and writes nothing outside the nodes' directories."""
    token = uuid.uuid4().hex[:10]
    outside = agent.workdir / f"outside-{token}"
    ids = {
        name: create_node(e2e_org, agent, name, desiredState="stopped")
        for name in ("cache-dotdot", "cache-empty", "cache-flags")
    }
    for node_id in ids.values():
        wait_phase(e2e_org, node_id, "STOPPED", revision=1)
    agent.stop()

    state_file = agent.data_dir / "state" / "specs.json"
    state = json.loads(state_file.read_text())
    entries = state["nodes"]

    def assigned(name: str) -> dict[str, Any]:
        entry: dict[str, Any] = entries[ids[name]]["assigned"]
        return entry

    assigned("cache-dotdot")["name"] = "../x"  # not a name at all: refused when read
    assigned("cache-empty")["name"] = ""  # a tombstone's empty name on a live spec
    flags_spec = assigned("cache-flags")["spec"]
    flags_spec["desired_state"] = "running"  # the file keeps Python field names
    flags_spec["overrides"] = {
        "args": {
            "node": [
                f"-datadir={outside}/data",
                f"-conf={outside}/litecoin.conf",
                f"-debuglogfile={outside}/debug.log",
                f"-blocknotify=touch /tmp/pwned-{token}-notify",
                f"-pid=/tmp/pwned-{token}.pid",
                f"-asmap={outside}/ip_asn.map",
            ]
        },
        "files": {"node": {"assumevalid": "00#x"}},
    }
    stranger = str(uuid.uuid4())
    entries[stranger] = {
        "assigned": {
            "nodeId": stranger,
            "name": "../../escape",
            "revision": 1,
            "spec": litecoin_spec(),
        }
    }
    state_file.write_text(json.dumps(state))
    before = tree(agent.workdir)
    watcher = LogWatcher(agent)

    agent.start()
    wait_for(lambda: _online(e2e_org, agent.name), timeout=60, what="agent online again")

    def apply_failed(name: str) -> dict[str, Any] | None:
        events = feed(e2e_org, nodeId=ids[name], type="node.apply.failed")
        return events[-1] if events else None

    empty = wait_for(lambda: apply_failed("cache-empty"), timeout=30, what="empty name refused")
    assert "name" in empty["message"], empty
    flags = wait_for(lambda: apply_failed("cache-flags"), timeout=30, what="flags refused")
    assert "invalid_node_config" in flags["message"] and "managed" in flags["message"], flags
    for flag in ("datadir", "conf", "debuglogfile", "blocknotify", "pid", "asmap"):
        assert f"-{flag}=" in flags["message"], flag
    assert "files.node.assumevalid" in flags["message"] and "'#'" in flags["message"], flags

    # The entry that was not a name was dropped; the control plane sent the real spec again.
    records = watcher.read()
    refused = [r for r in records if r.get("event") == "state.entry_refused"]
    assert {r["node_id"] for r in refused} == {ids["cache-dotdot"], stranger}, refused
    if not any(
        r.get("event") == "spec.received" and r.get("node") == "cache-dotdot" for r in records
    ):
        watcher.wait(
            lambda r: r.get("event") == "spec.received" and r.get("node") == "cache-dotdot",
            timeout=30,
        )
    held = json.loads(state_file.read_text())["nodes"]
    assert stranger not in held
    assert held[ids["cache-dotdot"]]["assigned"]["name"] == "cache-dotdot"

    # Nothing ran, nothing escaped.
    assert node_pids(agent, "cache-flags") == []
    assert start_count(agent, "cache-flags") == 0
    assert not outside.exists()
    assert not (agent.data_dir / "x").exists() and not (agent.workdir / "escape").exists()
    assert _pwned(token) == []
    strays = _new_paths_outside(
        before, tree(agent.workdir), agent, ["cache-dotdot", "cache-empty", "cache-flags"]
    )
    assert strays == []
    assert _online(e2e_org, agent.name)


# ---- the executor's path rules, directly ------------------------------------------------------

UNSAFE_NAMES = [
    "../x",
    "..",
    ".",
    "",
    "a/b",
    "/etc",
    "x\n",
    "a\x00",
    "A",
    "-a",
    "a" * 64,
    "$(id)",
    "nöde",
    "a b",
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_node_layout_refuses_names_outside_the_nodes_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafePath):
        node_layout(tmp_path, name)


def test_node_layout_of_a_plain_name(tmp_path: Path) -> None:
    layout = node_layout(tmp_path, "ltc-1")
    assert layout.root == nodes_root(tmp_path) / "ltc-1"
    assert layout.config_dir == tmp_path / "nodes" / "ltc-1" / "config"
    assert layout.data_dir == tmp_path / "nodes" / "ltc-1" / "data"
    assert node_layout(tmp_path, "a" * 63).root.name == "a" * 63


def test_node_layout_refuses_a_nodes_directory_that_is_a_symlink_elsewhere(
    tmp_path: Path,
) -> None:
    """A node directory replaced by a link to elsewhere is not that node's directory."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    nodes_root(tmp_path).mkdir()
    (nodes_root(tmp_path) / "ltc-1").symlink_to(elsewhere)
    with pytest.raises(UnsafePath):
        node_layout(tmp_path, "ltc-1")


@pytest.mark.parametrize(
    "relative", ["", "/etc/passwd", "..", "../x", "a/../../x", "a/../b", "./../x"]
)
def test_inside_refuses_paths_that_are_not_plain_relative(tmp_path: Path, relative: str) -> None:
    with pytest.raises(UnsafePath):
        inside(tmp_path, relative)


def test_inside_refuses_symlinks_that_lead_outside(tmp_path: Path) -> None:
    base = tmp_path / "node"
    (base / "config").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (base / "config" / "link").symlink_to(tmp_path / "secret")
    (base / "dirlink").symlink_to(tmp_path)
    for relative in ("config/link", "dirlink", "dirlink/secret"):
        with pytest.raises(UnsafePath):
            inside(base, relative)
    # A link that stays inside is fine, and so are plain nested paths.
    (base / "config" / "inner").symlink_to(base / "config")
    assert inside(base, "config/inner") == base / "config" / "inner"
    assert inside(base, "config/litecoin.conf") == base / "config" / "litecoin.conf"
    assert inside(base, "data/regtest/.cookie") == base / "data" / "regtest" / ".cookie"


# ---- an agent of its own, for tests that plant things before it starts ------------------------


@pytest.fixture
def stopped_agent(
    e2e_org: Org, e2e_server: ServerProcess, tmp_path: Path
) -> Iterator[AgentProcess]:
    """A process-driver agent that the test starts itself."""
    proc = AgentProcess(
        workdir=tmp_path / "agent",
        server_url=e2e_server.url,
        api_key=e2e_org.executor_key(),
        driver="process",
    )
    try:
        yield proc
    finally:
        proc.stop()
        _cleanup_units(proc)


def test_agent_with_a_corrupt_cache_entry_still_starts(
    e2e_org: Org, stopped_agent: AgentProcess
) -> None:
    """Before it ever connected: one unreadable entry in specs.json does not keep the agent
    (and every other node it holds) down."""
    stopped_agent.write_config()
    state_file = stopped_agent.data_dir / "state" / "specs.json"
    state_file.parent.mkdir(parents=True)
    bad = str(uuid.uuid4())
    state_file.write_text(
        json.dumps(
            {
                "version": 1,
                "nodes": {
                    bad: {
                        "assigned": {
                            "nodeId": bad,
                            "name": "../x",
                            "revision": 1,
                            "spec": litecoin_spec(
                                overrides={"args": {"node": ["-debugexclude=a\nExecStart=/x"]}}
                            ),
                        }
                    }
                },
            }
        )
    )
    os.chmod(state_file, 0o600)
    stopped_agent.start()
    wait_for(lambda: _online(e2e_org, stopped_agent.name), timeout=60, what="agent online")
    assert "state.entry_refused" in stopped_agent.log_path.read_text()
    assert not (stopped_agent.data_dir / "x").exists()
    assert not (stopped_agent.data_dir / "nodes").exists() or not any(
        (stopped_agent.data_dir / "nodes").iterdir()
    )
