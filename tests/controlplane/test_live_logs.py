"""Live logs through real control planes: a viewer's stream, an executor's session poll and its
chunk posts; on SQLite (one process) and on PostgreSQL with the viewer on one replica and the
executor on another (sessions and lines cross processes by LISTEN/NOTIFY). Organization and
executor-key scoping, typed refusals and bounds."""

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodeplane.executor.controlplane_client import ControlPlaneError
from nodeplane.protocol import ExecutorKind
from nodeplane.protocol.logs import MAX_LOG_VIEWERS_PER_NODE, LogChunk, LogLevel, LogLine
from tests.support.calls import deploy
from tests.support.fleet import FakeExecutor, Org, make_org
from tests.support.gql import Client
from tests.support.log_stream import LogStreamReader
from tests.support.server import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    ServerProcess,
    create_pg_database,
    drop_pg_database,
)

pytestmark = pytest.mark.server

LOGIN = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def planes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """(where viewers connect, where the executor connects): one SQLite server for both, or
    two replicas on one PostgreSQL database."""
    workdir = tmp_path_factory.mktemp(f"live-logs-{request.param}")
    if request.param == "sqlite":
        one = ServerProcess(database_url=f"sqlite:///{workdir / 'np.db'}", workdir=workdir)
        one.start()
        yield one, one
        one.stop()
        return
    url = create_pg_database()
    a = ServerProcess(database_url=url, workdir=workdir / "a")
    b = ServerProcess(database_url=url, workdir=workdir / "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        b.stop()
        a.stop()
        drop_pg_database(url)


def _org(server: ServerProcess) -> Org:
    token = Client(server.url)(LOGIN, {"e": ADMIN_EMAIL, "p": ADMIN_PASSWORD})["login"]["token"]
    return make_org(server.url, Client(server.url, token))


def _node(org: Org, on: ServerProcess, kind: ExecutorKind = ExecutorKind.AGENT) -> tuple[
    FakeExecutor, str
]:  # fmt: skip
    executor = FakeExecutor(on.url, org.executor_key(), kind=kind)
    executor.sync()
    node_id: str = deploy(org.owner, executor, f"ltc-{uuid.uuid4().hex[:6]}")["id"]
    return executor, node_id


def _line(text: str, level: LogLevel = LogLevel.INFO) -> LogLine:
    return LogLine(level=level, text=text)


def test_lines_reach_the_viewer_and_the_session_ends_when_it_leaves(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    org = _org(viewer_side)
    executor, node_id = _node(org, executor_side)
    executor.sync()  # online
    viewer = LogStreamReader(viewer_side.url, org.owner.token, node_id, tail=10, level="info")
    viewer.start()
    try:
        # The executor learns of the session on its poll (a fresh replica first hears every
        # session announced, a few seconds at most).
        sessions = executor.log_sessions([], wait=15)
        assert len(sessions) == 1
        session = sessions[0]
        assert (str(session.node_id), session.role, session.tail, session.level) == (
            node_id, "node", 10, LogLevel.INFO,
        )  # fmt: skip
        # Its lines reach the viewer, as data (markup and all), in order.
        sent_at = time.monotonic()
        assert executor.post_log_chunk(
            LogChunk(
                session_id=session.session_id,
                lines=[_line("first <b>line</b>"), _line("second", LogLevel.WARN)],
            )
        )
        arrived = viewer.next(timeout=5)
        assert arrived.event == "lines" and arrived.at - sent_at < 2
        assert arrived.data == {
            "lines": [["info", "first <b>line</b>"], ["warn", "second"]],
            "dropped": 0,
        }
        # Lines the executor had to drop are counted for the viewer.
        assert executor.post_log_chunk(
            LogChunk(session_id=session.session_id, lines=[_line("third")], dropped=42)
        )
        assert viewer.next(timeout=5).data == {"lines": [["info", "third"]], "dropped": 42}

        # Another organization's executor neither sees the session nor can post to it.
        other = _org(viewer_side)
        stranger, _ = _node(other, executor_side)
        assert stranger.log_sessions([], wait=0) == []
        assert not stranger.post_log_chunk(
            LogChunk(session_id=session.session_id, lines=[_line("forged")])
        )
        # A chunk for a session that does not exist is refused the same way.
        assert not executor.post_log_chunk(LogChunk(session_id=uuid.uuid4(), lines=[]))

        # A held poll wakes when the viewer leaves: the executor stops at once.
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(executor.log_sessions, [session.session_id], 20)
            time.sleep(1.0)
            assert not held.done(), "a poll with nothing changed was answered at once"
            viewer.close()
            left = time.monotonic()
            assert held.result(timeout=10) == []
            assert time.monotonic() - left < 2
        assert not executor.post_log_chunk(
            LogChunk(session_id=session.session_id, lines=[_line("late")])
        )
    finally:
        viewer.close()
    assert viewer.events.empty() or all(
        "forged" not in str(e.data) for e in list(viewer.events.queue)
    )


def test_the_executor_ends_a_session_with_done_or_a_typed_error(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    org = _org(viewer_side)
    executor, node_id = _node(org, executor_side)
    tail_only = LogStreamReader(viewer_side.url, org.owner.token, node_id, follow=0).start()
    failing = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
    try:
        sessions = {s.follow: s for s in executor.log_sessions([], wait=15)}
        if len(sessions) < 2:
            sessions |= {s.follow: s for s in executor.log_sessions(list(
                s.session_id for s in sessions.values()), wait=5)}  # fmt: skip
        assert executor.post_log_chunk(
            LogChunk(session_id=sessions[False].session_id, lines=[_line("tail")], done=True)
        )
        assert tail_only.next().data["lines"] == [["info", "tail"]]
        assert tail_only.next().event == "end" and tail_only.ended.wait(5)
        assert executor.post_log_chunk(
            LogChunk(
                session_id=sessions[True].session_id,
                error_code="log_source_failed",
                error="cannot read the log: permission denied",
            )
        )
        end = failing.next()
        assert end.event == "end"
        assert end.data == {
            "code": "log_source_failed",
            "message": "cannot read the log: permission denied",
        }
    finally:
        tail_only.close()
        failing.close()


def test_who_may_read_a_nodes_logs(planes: tuple[ServerProcess, ServerProcess]) -> None:
    viewer_side, executor_side = planes
    org = _org(viewer_side)
    executor, node_id = _node(org, executor_side)
    member = org.add_member("MEMBER")

    def refusal(token: str | None, **params: object) -> tuple[int | None, dict[str, object]]:
        reader = LogStreamReader(viewer_side.url, token, node_id, **params).start()
        reader.close()
        return reader.status, reader.refusal or {}

    # A member (the lowest role) reads; the session opens.
    reader = LogStreamReader(viewer_side.url, member.token, node_id).start()
    assert reader.status == 200
    reader.close()
    # Another organization's owner is told the node does not exist.
    other = _org(viewer_side)
    status, error = refusal(other.owner.token)
    assert (status, error["code"]) == (404, "not_found")
    status, error = refusal(None)
    assert (status, error["code"]) == (401, "unauthenticated")
    status, error = refusal(org.executor_key("reader"))
    assert (status, error["code"]) == (403, "forbidden")
    # Bad input is a typed error naming the parameter; nothing is opened.
    for params, field in [
        ({"role": "../../etc/passwd"}, "role"),
        ({"role": "node;reboot"}, "role"),
        ({"role": "execution"}, "role"),  # not a role of this node
        ({"tail": "5000"}, "tail"),
        ({"tail": "-1"}, "tail"),
        ({"tail": "many"}, "tail"),
        ({"level": "loud"}, "level"),
        ({"grep": "x"}, "grep"),
    ]:
        status, error = refusal(org.owner.token, **params)
        assert (status, error["code"], error["field"]) == (400, "invalid_input", field), params
    assert executor.log_sessions([], wait=3) == []
    # A browser's EventSource cannot read an error status: it gets the refusal as an event.
    browser = LogStreamReader(
        viewer_side.url, None, node_id, accept="text/event-stream", tail="5000"
    ).start()
    assert browser.status == 200
    assert browser.next().data["code"] == "unauthenticated"
    browser.close()


def test_refusals_for_operators_offline_executors_and_too_many_viewers(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    org = _org(viewer_side)
    _, on_operator = _node(org, executor_side, ExecutorKind.OPERATOR)
    reader = LogStreamReader(viewer_side.url, org.owner.token, on_operator).start()
    assert (reader.status, reader.refusal and reader.refusal["code"]) == (501, "logs_unavailable")

    _, node_id = _node(org, executor_side)
    readers = []
    try:
        for _ in range(MAX_LOG_VIEWERS_PER_NODE):
            readers.append(LogStreamReader(viewer_side.url, org.owner.token, node_id).start())
            assert readers[-1].status == 200
        extra = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
        assert (extra.status, extra.refusal and extra.refusal["code"]) == (429, "rate_limited")
    finally:
        for r in readers:
            r.close()
    # Silent past the heartbeat timeout (3 s here): offline, and said so.
    time.sleep(4)
    offline = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
    assert (offline.status, offline.refusal and offline.refusal["code"]) == (
        503, "executor_offline",
    )  # fmt: skip


def test_an_executor_that_never_answers_ends_the_stream(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    if viewer_side is not executor_side:
        pytest.skip("the timeout is the viewer's process's alone; once is enough")
    org = _org(viewer_side)
    executor, node_id = _node(org, executor_side)
    reader = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
    started = time.monotonic()
    end = reader.next(timeout=30)
    assert end.event == "end" and end.data["code"] == "executor_not_answering"
    assert 14 < time.monotonic() - started < 25
    reader.close()
    assert executor.log_sessions([], wait=0) == []


def test_a_second_instance_of_an_executor_is_refused_its_sessions(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    org = _org(viewer_side)
    key = org.executor_key()
    live = FakeExecutor(executor_side.url, key, instance_id=uuid.uuid4())
    live.sync()
    node_id: str = deploy(org.owner, live, "ltc-inst")["id"]
    clone = FakeExecutor(executor_side.url, key, name=live.name, instance_id=uuid.uuid4())
    reader = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
    try:
        assert len(live.log_sessions([], wait=15)) == 1
        with pytest.raises(ControlPlaneError) as refused:
            clone.log_sessions([], wait=0)
        assert refused.value.code == "executor_instance_conflict"
    finally:
        reader.close()


def test_a_stream_ends_when_its_executor_goes_offline(
    planes: tuple[ServerProcess, ServerProcess],
) -> None:
    viewer_side, executor_side = planes
    if viewer_side is not executor_side:
        pytest.skip("judged by the viewer's process alone; once is enough")
    org = _org(viewer_side)
    executor, node_id = _node(org, executor_side)
    reader = LogStreamReader(viewer_side.url, org.owner.token, node_id).start()
    try:
        (session,) = executor.log_sessions([], wait=10)
        assert executor.post_log_chunk(LogChunk(session_id=session.session_id, lines=[]))
        # No sync from now on: offline after the heartbeat timeout (3 s here), noticed at the
        # stream's next heartbeat (10 s).
        end = reader.next(timeout=20)
        assert end.event == "end" and end.data["code"] == "executor_offline"
    finally:
        reader.close()
