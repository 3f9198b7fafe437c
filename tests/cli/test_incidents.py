"""`nodeplane incidents list [--open|--resolved]` against a real control plane, with incidents
opened and resolved by real syncs."""

from pathlib import Path

from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from tests.cli.conftest import Cli
from tests.support.calls import deploy
from tests.support.fleet import FakeExecutor, Org, unique


def _observed(status: ProcessStatus) -> ObservedNodeState:
    return ObservedNodeState(revision=1, processes=[ObservedProcess(role="node", status=status)])


def test_incidents_list_filters_open_and_resolved(
    cli: Cli, org: Org, executor: FakeExecutor, tmp_path: Path
) -> None:
    assert cli("incidents", "list").stdout.strip() == "no incidents"
    healed, down = (deploy(org.owner, executor, unique(p)) for p in ("healed", "down"))
    executor.sync({healed["id"]: _observed(ProcessStatus.STOPPED)})
    executor.sync({healed["id"]: _observed(ProcessStatus.RUNNING)})
    executor.sync({down["id"]: _observed(ProcessStatus.ERROR)})

    listed = cli("incidents", "list", "-o", "json")
    assert listed.code == 0, listed.stderr
    rows = listed.json()
    assert [(r["subjectName"], r["state"], r["rule"]) for r in rows] == [
        (down["name"], "open", "node_down"),
        (healed["name"], "resolved", "node_down"),
    ]
    assert rows[1]["resolution"] == "condition cleared" and rows[1]["resolvedAt"]
    opened = cli("incidents", "list", "--open", "-o", "json").json()
    assert [r["subjectName"] for r in opened] == [down["name"]]
    resolved = cli("incidents", "list", "--resolved", "-o", "json").json()
    assert [r["subjectName"] for r in resolved] == [healed["name"]]

    table = cli("incidents", "list", "--open")
    assert table.code == 0
    assert "node_down" in table.stdout and f"node {down['name']}" in table.stdout
    assert "critical" in table.stdout and healed["name"] not in table.stdout
    assert cli("incidents", "list", "--limit", "1", "-o", "json").json()[0]["id"] == rows[0]["id"]

    both = cli("incidents", "list", "--open", "--resolved")
    assert both.code == 2 and "exclude each other" in both.said
    # A member reads them too.
    member = org.add_member("MEMBER")
    as_member = Cli(org.base_url, member.token, tmp_path / "member")
    assert len(as_member("incidents", "list", "-o", "json").json()) == 2
