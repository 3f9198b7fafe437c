"""`nodeplane nodes list|get|deploy|events|revisions` through a real server."""

import json
from pathlib import Path

from nodeplane.protocol import EventLevel, ProcessStatus, RuntimeEvent
from tests.cli.conftest import Cli, act, deploy
from tests.support.fleet import FakeExecutor, Org

S = ProcessStatus


def test_deploy_with_flags_then_get_and_list(cli: Cli, executor: FakeExecutor) -> None:
    result = cli(
        "nodes",
        "deploy",
        "ltc-1",
        "--executor",
        executor.name,
        "--chain",
        "litecoin",
        "--network",
        "regtest",
        "--node-type",
        "full",
        "--client",
        "node=litecoind:0.21.4",
        "--override-arg",
        "node=-debug=net",
        "--storage-size",
        "10Gi",
        "-o",
        "json",
    )
    assert result.code == 0, result.stderr
    node = result.json()
    assert node["name"] == "ltc-1"
    assert node["phase"] == "provisioning"
    assert node["revision"] == 1
    assert node["executor"]["name"] == executor.name
    assert node["spec"]["clients"] == {"node": {"name": "litecoind", "version": "0.21.4"}}
    assert node["spec"]["overrides"]["args"] == {"node": ["-debug=net"]}
    assert node["spec"]["storage"]["size"] == "10Gi"

    executor.observe(node["id"], 1, S.RUNNING)
    by_name = cli("nodes", "get", "ltc-1", "-o", "json").json()
    by_id = cli("nodes", "get", node["id"], "-o", "json").json()
    assert by_name == by_id
    assert by_name["phase"] == "running"
    assert by_name["observedRevision"] == 1

    detail = cli("nodes", "get", "ltc-1")
    assert detail.code == 0
    for text in ("ltc-1", "running", "litecoin regtest", "node=litecoind:0.21.4", "ROLE"):
        assert text in detail.stdout

    table = cli("nodes", "list")
    assert table.code == 0
    assert "ltc-1" in table.stdout and "running" in table.stdout and executor.name in table.stdout
    # The table reads rows without specs (NodeRow); JSON still prints whole nodes.
    listed = cli("nodes", "list", "-o", "json").json()
    assert listed == [by_name]


def test_deploy_from_a_spec_file_on_the_only_executor(
    cli: Cli, executor: FakeExecutor, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "chain": "litecoin",
                "network": "regtest",
                "clients": {"node": {"name": "litecoind", "version": "0.21.3"}},
                "storage": {"size": "5Gi"},
            }
        )
    )
    # Flags given with --spec-file win over the file.
    result = cli("nodes", "deploy", "ltc-2", "--spec-file", str(spec), "--storage-size", "6Gi")
    assert result.code == 0, result.stderr
    assert f"deployed ltc-2 on {executor.name}" in result.stdout
    node = cli("nodes", "get", "ltc-2", "-o", "json").json()
    assert node["spec"]["clients"]["node"]["version"] == "0.21.3"
    assert node["spec"]["storage"]["size"] == "6Gi"

    from_stdin = cli(
        "nodes", "deploy", "ltc-3", "--spec-file", "-", "-o", "json", input=spec.read_text()
    )
    assert from_stdin.code == 0, from_stdin.stderr
    assert from_stdin.json()["spec"]["storage"]["size"] == "5Gi"


def test_list_filters(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    a = deploy(org, executor, "ltc-a")
    deploy(org, executor, "ltc-b")
    executor.observe(a["id"], 1, S.RUNNING)
    running = cli("nodes", "list", "--phase", "running", "-o", "json").json()
    assert [n["name"] for n in running] == ["ltc-a"]
    assert [n["name"] for n in cli("nodes", "list", "--name", "-b", "-o", "json").json()] == [
        "ltc-b"
    ]
    assert cli("nodes", "list", "--chain", "ethereum", "-o", "json").json() == []
    assert cli("nodes", "list", "--chain", "ethereum").stdout.strip() == "no nodes"


def test_a_name_on_two_executors_needs_executor(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    other = FakeExecutor(org.base_url, org.executor_key("second"))
    other.sync()
    deploy(org, executor, "ltc-1")
    deploy(org, other, "ltc-1")

    ambiguous = cli("nodes", "get", "ltc-1")
    assert ambiguous.code == 2
    assert "used on 2 executors" in ambiguous.stderr and "--executor" in ambiguous.stderr

    chosen = cli("nodes", "get", "ltc-1", "--executor", other.name, "-o", "json")
    assert chosen.code == 0, chosen.stderr
    assert chosen.json()["executor"]["name"] == other.name

    # With two executors, deploy has to be told where.
    where = cli(
        "nodes",
        "deploy",
        "ltc-2",
        "--chain",
        "litecoin",
        "--network",
        "regtest",
        "--client",
        "node=litecoind:0.21.4",
    )
    assert where.code == 2
    assert "--executor" in where.stderr


def test_events_and_revisions(cli: Cli, org: Org, executor: FakeExecutor) -> None:
    node = deploy(org, executor)
    # More than one page (100) of the feed, in one call.
    crashes = [
        RuntimeEvent(
            node_id=node["id"],
            type="node.process.crashed",
            level=EventLevel.WARN,
            message=f"crash {i}",
        )
        for i in range(110)
    ]
    executor.report(*crashes)
    act(org, node["id"], "STOP")
    act(org, node["id"], "START")

    everything = cli("nodes", "events", "ltc-1", "--limit", "1000", "-o", "json")
    assert everything.code == 0, everything.stderr
    events = everything.json()
    assert len(events) == 113
    assert len({e["id"] for e in events}) == 113
    assert events[-1]["type"] == "node.created"
    times = [e["createdAt"] for e in events]
    assert times == sorted(times, reverse=True)

    last_three = cli("nodes", "events", "ltc-1", "--limit", "3", "-o", "json").json()
    assert [e["id"] for e in last_three] == [e["id"] for e in events[:3]]
    assert [e["payload"].get("action") for e in last_three] == ["start", "stop", None]

    table = cli("nodes", "events", "ltc-1", "--limit", "2")
    assert "node.lifecycle.requested" in table.stdout and "requested start of ltc-1" in table.stdout

    revisions = cli("nodes", "revisions", "ltc-1", "-o", "json").json()
    assert [(r["revision"], r["cause"]) for r in revisions] == [
        (1, "created"),
        (2, "lifecycle: stop"),
        (3, "lifecycle: start"),
    ]
    assert revisions[1]["spec"]["desiredState"] == "stopped"
    table = cli("nodes", "revisions", "ltc-1")
    assert "lifecycle: stop" in table.stdout and "stopped" in table.stdout
