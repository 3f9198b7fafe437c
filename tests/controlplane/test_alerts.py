"""Alerts through the API with real syncs: node_down, disk_usage, sync_stalled and
executor_offline open one incident per (rule, subject) and resolve when the condition clears,
with `notification.alert.*` events; settings layer organization defaults under node overrides;
members read and only owners and admins edit; on PostgreSQL several worker processes judging at
once still open one incident."""

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from nodeplane.controlplane.services import alerts
from nodeplane.controlplane.store.database import Database
from nodeplane.controlplane.store.migrate import migrate
from nodeplane.controlplane.store.models import AlertSetting, Event, Incident, Node, Organization
from nodeplane.protocol import ObservedNodeState, ObservedProcess, ProcessStatus
from nodeplane.protocol.alerts import AlertRule, Finding
from tests.support.calls import act, all_events, deploy, wait_until
from tests.support.db import connect
from tests.support.fleet import ETHEREUM_SPEC, FakeExecutor, Org, make_org, unique
from tests.support.gql import Client, GraphQLError
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
)

INCIDENT_FIELDS = """id rule severity state subjectKind subjectId subjectName nodeId executorId
message value threshold details openedAt resolvedAt resolution"""
INCIDENTS = f"""query($f: IncidentFilter, $first: Int, $after: String) {{
  incidents(filter: $f, first: $first, after: $after) {{ items {{ {INCIDENT_FIELDS} }}
    pageInfo {{ endCursor hasNextPage }} }}
  openIncidentCount }}"""
SETTING_FIELDS = """rule enabled threshold defaultThreshold thresholdMeaning orgEnabled
orgThreshold nodeEnabled nodeThreshold nodeId"""
SETTINGS = f"query($n: UUID) {{ alertSettings(nodeId: $n) {{ {SETTING_FIELDS} }} }}"
SET_DEFAULT = f"""mutation($r: AlertRule!, $e: Boolean!, $t: Float) {{
  setAlertDefault(rule: $r, enabled: $e, threshold: $t) {{ {SETTING_FIELDS} }} }}"""
SET_OVERRIDE = f"""mutation($n: UUID!, $r: AlertRule!, $e: Boolean, $t: Float) {{
  setNodeAlertOverride(nodeId: $n, rule: $r, enabled: $e, threshold: $t) {{ {SETTING_FIELDS} }} }}"""

PAYLOAD_KEYS = {
    "incidentId",
    "rule",
    "severity",
    "state",
    "subject",
    "nodeId",
    "nodeName",
    "executorId",
    "executorName",
    "message",
    "value",
    "threshold",
    "details",
    "openedAt",
    "resolvedAt",
    "resolution",
}


def observed(
    status: ProcessStatus = ProcessStatus.RUNNING, revision: int = 1, **metrics: Any
) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision, processes=[ObservedProcess(role="node", status=status, **metrics)]
    )


def incidents(client: Client, **flt: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client(INCIDENTS, {"f": flt, "first": 200})["incidents"]["items"]
    return items


def open_of(client: Client, node_or_executor: str, rule: str) -> list[dict[str, Any]]:
    return [
        i
        for i in incidents(client, state="OPEN")
        if i["subjectId"] == node_or_executor and i["rule"] == rule
    ]


def alert_events(client: Client, subject: str) -> list[dict[str, Any]]:
    """notification.alert.* events about `subject`, oldest first."""
    return [
        e
        for e in reversed(all_events(client, type="notification.alert.*"))
        if e["payload"]["subject"]["id"] == subject
    ]


def node_setting(client: Client, node_id: str, rule: str) -> dict[str, Any]:
    rows = client(SETTINGS, {"n": node_id})["alertSettings"]
    row: dict[str, Any] = next(r for r in rows if r["rule"] == rule)
    return row


# ---- node_down -----------------------------------------------------------------------------


def test_node_down_opens_once_and_resolves_with_complete_events(
    org: Org, executor: FakeExecutor
) -> None:
    node = deploy(org.owner, executor, unique("down"))
    nid = node["id"]
    executor.sync({nid: observed(height=5)})
    assert incidents(org.owner) == []

    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    # Repeated while down (a second write-path sync, and the steady answer): still one.
    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    [incident] = open_of(org.owner, nid, "NODE_DOWN")
    assert incident["severity"] == "critical" and incident["state"] == "OPEN"
    assert (incident["subjectKind"], incident["subjectName"]) == ("node", node["name"])
    assert incident["nodeId"] == nid and incident["executorId"] == executor.id
    assert incident["details"] == {"processes": {"node": "stopped"}}
    assert org.owner(INCIDENTS, {"f": {"state": "OPEN"}})["openIncidentCount"] == 1

    [opened] = alert_events(org.owner, nid)
    assert opened["type"] == "notification.alert.opened" and opened["level"] == "ERROR"
    payload = opened["payload"]
    assert set(payload) == PAYLOAD_KEYS
    assert payload["incidentId"] == incident["id"]
    assert payload["rule"] == "node_down" and payload["state"] == "open"
    assert payload["subject"] == {"kind": "node", "id": nid, "name": node["name"]}
    assert payload["nodeName"] == node["name"] and payload["executorId"] == executor.id
    assert payload["executorName"] == executor.name
    assert payload["openedAt"] and payload["resolvedAt"] is None
    assert payload["value"] == 1.0 and payload["message"] == incident["message"]

    # An error is down too, the same incident; running again resolves it.
    executor.sync({nid: observed(ProcessStatus.ERROR)})
    assert len(open_of(org.owner, nid, "NODE_DOWN")) == 1
    executor.sync({nid: observed(height=6)})
    assert open_of(org.owner, nid, "NODE_DOWN") == []
    [resolved_row] = incidents(org.owner, state="RESOLVED", nodeId=nid)
    assert (
        resolved_row["id"] == incident["id"] and resolved_row["resolution"] == "condition cleared"
    )
    opened_again, resolved = alert_events(org.owner, nid)[-2:]
    assert opened_again["id"] == opened["id"]
    assert resolved["type"] == "notification.alert.resolved"
    assert set(resolved["payload"]) == PAYLOAD_KEYS
    assert resolved["payload"]["incidentId"] == incident["id"]
    assert resolved["payload"]["state"] == "resolved" and resolved["payload"]["resolvedAt"]

    # Down again is a new incident; stopping the node on purpose resolves it.
    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    [second] = open_of(org.owner, nid, "NODE_DOWN")
    assert second["id"] != incident["id"]
    act(org.owner, nid, "STOP")
    assert open_of(org.owner, nid, "NODE_DOWN") == []
    [row] = [i for i in incidents(org.owner, nodeId=nid) if i["id"] == second["id"]]
    assert row["resolution"] == "node stopped on purpose"
    # Stopped as asked is not down.
    executor.sync({nid: observed(ProcessStatus.STOPPED, revision=2)})
    assert open_of(org.owner, nid, "NODE_DOWN") == []


def test_node_down_waits_for_the_current_revision(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, unique("cfg"))["id"]
    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    assert len(open_of(org.owner, nid, "NODE_DOWN")) == 1
    # A restart is a new revision: while the executor applies it, processes stop on purpose;
    # the incident neither resolves nor duplicates until revision 2 is reported.
    act(org.owner, nid, "RESTART")
    executor.sync({nid: observed(ProcessStatus.STOPPED, revision=1)})
    assert len(open_of(org.owner, nid, "NODE_DOWN")) == 1
    executor.sync({nid: observed(revision=2)})
    assert open_of(org.owner, nid, "NODE_DOWN") == []
    # Down again and restarted again, then the rule is turned off for the node while the
    # executor is still applying: that resolves it at once.
    executor.sync({nid: observed(ProcessStatus.STOPPED, revision=2)})
    assert len(open_of(org.owner, nid, "NODE_DOWN")) == 1
    act(org.owner, nid, "RESTART")
    org.owner(SET_OVERRIDE, {"n": nid, "r": "NODE_DOWN", "e": False})
    assert open_of(org.owner, nid, "NODE_DOWN") == []
    assert incidents(org.owner, nodeId=nid)[0]["resolution"] == "rule disabled"


# ---- disk_usage and settings -----------------------------------------------------------------


def test_disk_usage_default_threshold_and_node_override(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, unique("disk"))["id"]
    gib = 1 << 30
    executor.sync({nid: observed(disk_total_bytes=100 * gib, disk_available_bytes=20 * gib)})
    assert open_of(org.owner, nid, "DISK_USAGE") == []  # 80 % < 85 %
    executor.sync({nid: observed(disk_total_bytes=100 * gib, disk_available_bytes=10 * gib)})
    [incident] = open_of(org.owner, nid, "DISK_USAGE")
    assert (incident["value"], incident["threshold"]) == (90.0, 85.0)
    assert incident["severity"] == "warning"

    # A node override above the usage resolves it at once, without waiting for a sync.
    rows = org.owner(SET_OVERRIDE, {"n": nid, "r": "DISK_USAGE", "t": 95})["setNodeAlertOverride"]
    disk = next(r for r in rows if r["rule"] == "DISK_USAGE")
    assert (disk["threshold"], disk["nodeThreshold"], disk["orgThreshold"]) == (95.0, 95.0, None)
    assert disk["defaultThreshold"] == 85.0 and disk["nodeId"] == nid
    assert open_of(org.owner, nid, "DISK_USAGE") == []
    [resolved] = incidents(org.owner, state="RESOLVED", nodeId=nid)
    assert resolved["id"] == incident["id"]

    # Lower than the usage opens again; the organization's default disabling it resolves it
    # (the override sets only the threshold, and inherits enabled).
    org.owner(SET_OVERRIDE, {"n": nid, "r": "DISK_USAGE", "t": 80})
    [again] = open_of(org.owner, nid, "DISK_USAGE")
    assert again["threshold"] == 80.0
    org.owner(SET_DEFAULT, {"r": "DISK_USAGE", "e": False})
    assert open_of(org.owner, nid, "DISK_USAGE") == []
    assert node_setting(org.owner, nid, "DISK_USAGE")["enabled"] is False
    # The node enables it for itself alone.
    org.owner(SET_OVERRIDE, {"n": nid, "r": "DISK_USAGE", "e": True, "t": 80})
    assert len(open_of(org.owner, nid, "DISK_USAGE")) == 1
    other = deploy(org.owner, executor, unique("disk"))["id"]
    executor.sync({other: observed(disk_total_bytes=100 * gib, disk_available_bytes=1 * gib)})
    assert open_of(org.owner, other, "DISK_USAGE") == []
    # Both fields null: the override is gone and the node follows the organization again.
    org.owner(SET_OVERRIDE, {"n": nid, "r": "DISK_USAGE"})
    setting = node_setting(org.owner, nid, "DISK_USAGE")
    assert (setting["nodeEnabled"], setting["nodeThreshold"], setting["enabled"]) == (
        None,
        None,
        False,
    )
    assert open_of(org.owner, nid, "DISK_USAGE") == []
    changes = all_events(org.owner, type="alert.settings.changed")
    assert len(changes) == 5 and all(c["actorType"] == "user" for c in changes)


def test_settings_are_validated_with_typed_errors(org: Org, executor: FakeExecutor) -> None:
    nid = deploy(org.owner, executor, unique("v"))["id"]
    cases = [
        (SET_DEFAULT, {"r": "DISK_USAGE", "e": True, "t": 150}, "threshold"),
        (SET_DEFAULT, {"r": "DISK_USAGE", "e": True, "t": 0}, "threshold"),
        (SET_DEFAULT, {"r": "NODE_DOWN", "e": True, "t": 5}, "threshold"),
        (SET_DEFAULT, {"r": "SYNC_STALLED", "e": True, "t": 1}, "threshold"),
        (SET_OVERRIDE, {"n": nid, "r": "EXECUTOR_OFFLINE", "e": False}, "rule"),
    ]
    for mutation, variables, field in cases:
        with pytest.raises(GraphQLError) as err:
            org.owner(mutation, variables)
        assert (err.value.code, err.value.extensions.get("field")) == ("invalid_input", field)
    with pytest.raises(GraphQLError) as bad_rule:
        org.owner(SET_DEFAULT, {"r": "NOT_A_RULE", "e": True})
    assert bad_rule.value.code == "bad_request"
    # Nothing was stored.
    org_rows = org.owner(SETTINGS)["alertSettings"]
    assert {r["rule"] for r in org_rows} == {
        "NODE_DOWN",
        "DISK_USAGE",
        "SYNC_STALLED",
        "EXECUTOR_OFFLINE",
    }
    assert all(r["orgEnabled"] is None and r["orgThreshold"] is None for r in org_rows)
    stall = node_setting(org.owner, nid, "SYNC_STALLED")
    # The chain's own stall time (protocol/alerts.py): litecoin's.
    assert stall["threshold"] == stall["defaultThreshold"] == 20 * 60.0


# ---- roles and organizations -------------------------------------------------------------


def test_members_read_alerts_and_only_owners_and_admins_edit(
    org: Org, executor: FakeExecutor, server: ServerProcess, system_admin: Client
) -> None:
    nid = deploy(org.owner, executor, unique("roles"))["id"]
    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    member, admin = org.add_member("MEMBER"), org.add_member("ADMIN")
    assert [i["rule"] for i in incidents(member)] == ["NODE_DOWN"]
    assert member(SETTINGS, {"n": nid})["alertSettings"]
    for mutation, variables in (
        (SET_DEFAULT, {"r": "NODE_DOWN", "e": False}),
        (SET_OVERRIDE, {"n": nid, "r": "NODE_DOWN", "e": False}),
    ):
        with pytest.raises(GraphQLError) as err:
            member(mutation, variables)
        assert err.value.code == "forbidden"
    assert len(open_of(org.owner, nid, "NODE_DOWN")) == 1
    # An admin may: disabling the rule for the node resolves its incident.
    admin(SET_OVERRIDE, {"n": nid, "r": "NODE_DOWN", "e": False})
    [row] = incidents(member, nodeId=nid)
    assert row["resolution"] == "rule disabled"

    # Another organization sees nothing and can change nothing here.
    other = make_org(server.url, system_admin)
    assert other.owner(INCIDENTS, {"f": {}})["incidents"]["items"] == []
    assert other.owner(INCIDENTS, {"f": {}})["openIncidentCount"] == 0
    assert other.owner(SETTINGS, {"n": nid})["alertSettings"] is None
    assert other.owner("query($id: UUID!) { incident(id: $id) { id } }", {"id": row["id"]}) == {
        "incident": None
    }
    with pytest.raises(GraphQLError) as err:
        other.owner(SET_OVERRIDE, {"n": nid, "r": "NODE_DOWN", "e": True})
    assert err.value.code == "not_found"
    # An executor key reads its own executor's incidents only.
    key_client = Client(server.url, org.executor_key("reader"))
    assert incidents(key_client) == []
    with pytest.raises(GraphQLError) as err:
        Client(server.url)(INCIDENTS, {"f": {}})
    assert err.value.code == "unauthenticated"


def test_incidents_page_by_cursor_and_filter_by_state(org: Org, executor: FakeExecutor) -> None:
    ids = [deploy(org.owner, executor, unique("page"))["id"] for _ in range(5)]
    executor.sync({nid: observed(ProcessStatus.STOPPED) for nid in ids})
    executor.sync({ids[0]: observed()})
    seen: list[str] = []
    after = None
    while True:
        page = org.owner(INCIDENTS, {"f": {}, "first": 2, "after": after})["incidents"]
        seen += [i["id"] for i in page["items"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 5
    assert len(incidents(org.owner, state="OPEN")) == 4
    assert [i["nodeId"] for i in incidents(org.owner, state="RESOLVED")] == [ids[0]]
    with pytest.raises(GraphQLError) as err:
        org.owner(INCIDENTS, {"f": {}, "after": "not a cursor"})
    assert (err.value.code, err.value.extensions.get("field")) == ("invalid_input", "after")


# ---- sync_stalled ----------------------------------------------------------------------------


def test_sync_stalled_fires_when_the_head_moves_without_the_node_and_clears_on_progress(
    org: Org, server: ServerProcess
) -> None:
    ex = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    ex.sync()
    stuck = deploy(org.owner, ex, unique("stall"))["id"]
    alone = deploy(org.owner, ex, unique("alone"))["id"]
    for nid in (stuck, alone):
        org.owner(SET_OVERRIDE, {"n": nid, "r": "SYNC_STALLED", "t": 5})
    at_tip = {
        stuck: observed(height=10, network_height=10, peers=2),
        # A regtest node run alone: no peers, no new blocks, by design.
        alone: observed(height=3, network_height=3, peers=0),
    }
    ex.sync(at_tip)
    started = time.monotonic()
    # The head moves on while the node stays at 10; it keeps reporting every second, and the
    # steady reports write nothing: only the timer can notice the time passing.
    moved = {
        **at_tip,
        stuck: observed(ProcessStatus.SYNCING, height=10, network_height=14, peers=2),
    }
    ex.sync(moved)
    assert open_of(org.owner, stuck, "SYNC_STALLED") == []

    def stalled() -> list[dict[str, Any]]:
        ex.sync(moved)
        return open_of(org.owner, stuck, "SYNC_STALLED")

    [incident] = wait_until(stalled, timeout=30, interval=1, what="sync_stalled opened")
    assert time.monotonic() - started >= 5
    assert incident["threshold"] == 5.0 and incident["value"] >= 5.0
    assert incident["details"]["height"] == 10 and incident["details"]["networkHeight"] == 14
    assert "network head moved" in incident["message"]
    [opened] = alert_events(org.owner, stuck)
    assert opened["payload"]["rule"] == "sync_stalled" and opened["level"] == "WARN"
    assert open_of(org.owner, alone, "SYNC_STALLED") == []

    # Still stuck: no second incident on the following ticks.
    for _ in range(3):
        ex.sync(moved)
        time.sleep(1)
    assert len(alert_events(org.owner, stuck)) == 1
    # Progress resolves it on arrival.
    ex.sync(
        {**at_tip, stuck: observed(ProcessStatus.SYNCING, height=12, network_height=14, peers=2)}
    )
    assert open_of(org.owner, stuck, "SYNC_STALLED") == []
    assert [e["type"] for e in alert_events(org.owner, stuck)] == [
        "notification.alert.opened",
        "notification.alert.resolved",
    ]


def test_sync_stalled_counts_lost_peers(org: Org, server: ServerProcess) -> None:
    ex = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    ex.sync()
    nid = deploy(org.owner, ex, unique("peers"))["id"]
    org.owner(SET_OVERRIDE, {"n": nid, "r": "SYNC_STALLED", "t": 5})
    ex.sync({nid: observed(height=20, network_height=20, peers=1)})
    isolated = {nid: observed(height=20, network_height=20, peers=0)}

    def stalled() -> list[dict[str, Any]]:
        ex.sync(isolated)
        return open_of(org.owner, nid, "SYNC_STALLED")

    [incident] = wait_until(stalled, timeout=30, interval=1, what="sync_stalled opened")
    assert "no peers" in incident["message"] and incident["details"]["peers"] == 0
    ex.sync({nid: observed(height=21, network_height=21, peers=1)})
    assert open_of(org.owner, nid, "SYNC_STALLED") == []


def test_the_alert_timer_reads_only_nodes_still_for_their_own_stall_time(
    server: ServerProcess, system_admin: Client
) -> None:
    """The timer's candidates are held to each node's own stall time (its chain's, or as
    its organization or the node configures it), not to the shortest of any chain: a
    litecoin node still for 10 minutes is not read at every tick because Ethereum's stall
    time is 5."""
    plain, tuned = make_org(server.url, system_admin), make_org(server.url, system_admin)
    tuned.owner(SET_DEFAULT, {"r": "SYNC_STALLED", "e": True, "t": 120})
    ex = FakeExecutor(server.url, plain.executor_key(), instance_id=uuid.uuid4())
    ex.sync()
    tuned_ex = FakeExecutor(server.url, tuned.executor_key(), instance_id=uuid.uuid4())
    tuned_ex.sync()
    still_for = {  # node id -> minutes its height has stood still
        deploy(plain.owner, ex, unique("ltc-10"))["id"]: 10,
        deploy(plain.owner, ex, unique("ltc-25"))["id"]: 25,
        deploy(plain.owner, ex, unique("eth-6"), ETHEREUM_SPEC)["id"]: 6,
        deploy(plain.owner, ex, unique("eth-3"), ETHEREUM_SPEC)["id"]: 3,
        deploy(plain.owner, ex, unique("ltc-over"))["id"]: 10,
        deploy(plain.owner, ex, unique("ltc-off"))["id"]: 25,
        deploy(tuned.owner, tuned_ex, unique("ltc-org"))["id"]: 10,
        deploy(tuned.owner, tuned_ex, unique("ltc-1"))["id"]: 1,
    }
    ids = list(still_for)
    plain.owner(SET_OVERRIDE, {"n": ids[4], "r": "SYNC_STALLED", "t": 60})
    plain.owner(SET_OVERRIDE, {"n": ids[5], "r": "SYNC_STALLED", "e": False})
    now = alerts.utcnow()
    with connect(server.database_url) as conn:
        for nid, minutes in still_for.items():
            conn.execute(
                update(Node)
                .where(Node.id == uuid.UUID(nid))
                .values(heights_since=now - timedelta(minutes=minutes))
            )
        conn.commit()

    async def candidates() -> set[str]:
        db = Database(server.database_url)
        await db.start()
        try:
            async with db.read() as session:
                nodes, _views = await alerts.stall_candidates(session, now)
                return {str(n.id) for n in nodes} & set(ids)
        finally:
            await db.close()

    # ltc-10: litecoin's 20 minutes not reached; eth-3: under Ethereum's 5; ltc-off: the
    # rule is off for it; ltc-1: under its organization's 2 minutes.
    assert asyncio.run(candidates()) == {ids[1], ids[2], ids[4], ids[6]}


# ---- executor_offline --------------------------------------------------------------------------


def test_executor_offline_with_nodes_opens_and_resolves_on_reconnect(
    org: Org, server: ServerProcess
) -> None:
    busy = FakeExecutor(server.url, org.executor_key("busy"), instance_id=uuid.uuid4())
    idle = FakeExecutor(server.url, org.executor_key("idle"), instance_id=uuid.uuid4())
    busy.sync()
    idle.sync()
    assert busy.id is not None and idle.id is not None
    nid = deploy(org.owner, busy, unique("off"))["id"]
    busy.sync({nid: observed(height=1)})

    [incident] = wait_until(
        lambda: open_of(org.owner, busy.id or "", "EXECUTOR_OFFLINE"),
        timeout=30,
        what="executor_offline opened",
    )
    assert (incident["subjectKind"], incident["subjectName"]) == ("executor", busy.name)
    assert incident["executorId"] == busy.id and incident["nodeId"] is None
    assert incident["value"] == 1.0 and incident["severity"] == "critical"
    # The idle executor went silent too, but hosts nothing: no incident.
    wait_until(
        lambda: any(
            e["executorId"] == idle.id for e in all_events(org.owner, type="executor.disconnected")
        ),
        timeout=30,
        what="idle executor disconnected",
    )
    assert open_of(org.owner, idle.id, "EXECUTOR_OFFLINE") == []
    [opened] = alert_events(org.owner, busy.id)
    assert opened["payload"]["executorName"] == busy.name
    assert opened["payload"]["subject"] == {"kind": "executor", "id": busy.id, "name": busy.name}

    busy.sync({nid: observed(height=1)})
    assert open_of(org.owner, busy.id, "EXECUTOR_OFFLINE") == []
    [row] = incidents(org.owner, state="RESOLVED", rule="EXECUTOR_OFFLINE")
    assert row["resolution"] == "executor reconnected"


# ---- one open incident under concurrent evaluation -------------------------------------------


@pytest.mark.server
def test_concurrent_openers_on_postgresql_open_one_incident(tmp_path: Path) -> None:
    """Many transactions opening the same (rule, subject) at once on PostgreSQL: the unique
    open key lets exactly one through, and only it records the event."""
    url = create_pg_database()
    try:
        migrate(url)

        async def scenario() -> tuple[list[bool], int, int]:
            db = Database(url)
            await db.start()
            try:
                async with db.write() as uow:
                    org = Organization(name=unique("race"))
                    uow.session.add(org)
                    await uow.session.flush()
                    org_id = org.id
                node_id = uuid.uuid4()
                subject = alerts.Subject(
                    alerts.SubjectKind.NODE, node_id, "racer", org_id, None, None
                )
                finding = Finding(1.0, None, "racer is down", {})
                gate = asyncio.Event()

                async def one() -> bool:
                    async with db.write() as uow:
                        await gate.wait()
                        got = await alerts.open_incident(
                            uow.session, AlertRule.NODE_DOWN, subject, finding, alerts.utcnow()
                        )
                        await asyncio.sleep(0.05)  # hold the transaction open a little
                        return got is not None

                tasks = [asyncio.create_task(one()) for _ in range(8)]
                await asyncio.sleep(0.2)
                gate.set()
                results = await asyncio.gather(*tasks)
                async with db.read() as session:
                    rows = await session.scalar(
                        select(func.count()).where(Incident.organization_id == org_id)
                    )
                    events = await session.scalar(
                        select(func.count()).where(
                            Event.organization_id == org_id, Event.type == alerts.OPENED
                        )
                    )
                return results, int(rows or 0), int(events or 0)
            finally:
                await db.close()

        results, rows, events = asyncio.run(scenario())
        assert sorted(results) == [False] * 7 + [True]
        assert (rows, events) == (1, 1)
    finally:
        drop_pg_database(url)


@pytest.mark.server
def test_three_workers_judging_a_stall_at_once_open_one_incident(tmp_path: Path) -> None:
    """Every worker process runs the alert timer; on PostgreSQL they all find the stalled node
    on the same ticks, and one incident with one event comes of it."""
    url = create_pg_database()
    server = ServerProcess(
        database_url=url,
        workdir=tmp_path / "server",
        heartbeat_timeout=30,
        extra_args=["--workers", "3"],
        extra_env={"NODEPLANE_ALERT_INTERVAL": "0.2"},
    )
    server.start()
    try:
        admin_token = Client(server.url)(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD},
        )["login"]["token"]
        org = make_org(server.url, Client(server.url, admin_token))
        ex = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
        ex.sync()
        nids = [deploy(org.owner, ex, unique("race"))["id"] for _ in range(4)]
        for nid in nids:
            org.owner(SET_OVERRIDE, {"n": nid, "r": "SYNC_STALLED", "t": 5})
        ex.sync({nid: observed(height=7, network_height=7, peers=3) for nid in nids})
        moved = {nid: observed(height=7, network_height=9, peers=3) for nid in nids}
        ex.sync(moved)

        def all_open() -> bool:
            ex.sync(moved)
            return len(incidents(org.owner, state="OPEN", rule="SYNC_STALLED")) == len(nids)

        wait_until(all_open, timeout=40, interval=0.5, what="every stall opened")
        time.sleep(2)  # many more ticks of every worker
        rows = incidents(org.owner, rule="SYNC_STALLED")
        assert sorted(r["nodeId"] for r in rows) == sorted(nids)
        opened = all_events(org.owner, type="notification.alert.opened")
        assert sorted(e["nodeId"] for e in opened) == sorted(nids)
        with connect(url) as conn:
            duplicated = conn.execute(
                text("SELECT node_id FROM incidents GROUP BY node_id HAVING count(*) > 1")
            ).all()
        assert duplicated == []
    finally:
        server.stop()
        drop_pg_database(url)


def test_executor_offline_follows_its_organization_default(org: Org, server: ServerProcess) -> None:
    org.owner(SET_DEFAULT, {"r": "EXECUTOR_OFFLINE", "e": False})
    ex = FakeExecutor(server.url, org.executor_key(), instance_id=uuid.uuid4())
    ex.sync()
    assert ex.id is not None
    nid = deploy(org.owner, ex, unique("quiet"))["id"]
    ex.sync({nid: observed(height=1)})
    wait_until(
        lambda: any(
            e["executorId"] == ex.id for e in all_events(org.owner, type="executor.disconnected")
        ),
        timeout=30,
        what="executor disconnected",
    )
    assert open_of(org.owner, ex.id, "EXECUTOR_OFFLINE") == []
    # Enabled while it is offline: opened at once, not only at its next disconnect.
    org.owner(SET_DEFAULT, {"r": "EXECUTOR_OFFLINE", "e": True})
    [incident] = open_of(org.owner, ex.id, "EXECUTOR_OFFLINE")
    assert incident["value"] == 1.0
    # Setting it again changes nothing; disabling resolves it.
    org.owner(SET_DEFAULT, {"r": "EXECUTOR_OFFLINE", "e": True})
    assert len(incidents(org.owner, rule="EXECUTOR_OFFLINE")) == 1
    org.owner(SET_DEFAULT, {"r": "EXECUTOR_OFFLINE", "e": False})
    [row] = incidents(org.owner, rule="EXECUTOR_OFFLINE")
    assert (row["id"], row["state"], row["resolution"]) == (
        incident["id"],
        "RESOLVED",
        "rule disabled",
    )


def test_deleting_a_node_resolves_its_incidents_and_teardown_drops_its_overrides(
    org: Org, executor: FakeExecutor, server: ServerProcess
) -> None:
    node = deploy(org.owner, executor, unique("gone"))
    nid = node["id"]
    org.owner(SET_OVERRIDE, {"n": nid, "r": "DISK_USAGE", "t": 50})
    executor.sync(
        {nid: observed(ProcessStatus.ERROR, disk_total_bytes=100, disk_available_bytes=10)}
    )
    assert {i["rule"] for i in incidents(org.owner, state="OPEN", nodeId=nid)} == {
        "NODE_DOWN",
        "DISK_USAGE",
    }
    org.owner("mutation($id: UUID!) { deleteNode(nodeId: $id) { id } }", {"id": nid})
    rows = incidents(org.owner, nodeId=nid)
    assert {(r["rule"], r["state"], r["resolution"]) for r in rows} == {
        ("NODE_DOWN", "RESOLVED", "node deleted"),
        ("DISK_USAGE", "RESOLVED", "node deleted"),
    }
    # Reports during the teardown reopen nothing; the confirmed teardown drops the override,
    # and the incidents stay as history under the node's name.
    executor.sync({nid: observed(ProcessStatus.STOPPED)})
    assert incidents(org.owner, state="OPEN") == []
    assert executor.confirm_teardown(nid) is True
    with connect(server.database_url) as conn:
        left = conn.execute(
            select(func.count()).where(AlertSetting.node_id == uuid.UUID(nid))
        ).scalar_one()
    assert left == 0
    assert {r["subjectName"] for r in incidents(org.owner, nodeId=nid)} == {node["name"]}
