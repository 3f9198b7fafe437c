"""The CLI's pure parts: when a wait ends, flags to spec, and which credentials win."""

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import typer

from nodeplane.cli.credentials import Credentials, load_credentials, resolve, save_credentials
from nodeplane.cli.models import Node
from nodeplane.cli.spec_flags import build_spec
from nodeplane.cli.wait import Progress, Target, judge


def node(phase: str, revision: int, observed: int | None) -> Node:
    now = datetime.now(UTC)
    raw: dict[str, Any] = {
        "id": uuid4(),
        "name": "n",
        "chain": "litecoin",
        "network": "regtest",
        "phase": phase.upper(),
        "desiredState": "RUNNING",
        "revision": revision,
        "observedRevision": observed,
        "pendingChange": False,
        "stale": False,
        "spec": {},
        "createdAt": now,
        "updatedAt": now,
        "executorId": uuid4(),
    }
    return Node.from_api(raw)


@pytest.mark.parametrize(
    ("current", "target", "revision", "expected"),
    [
        (node("running", 2, 2), Target.RUNNING, 2, Progress.DONE),
        (node("running", 2, 1), Target.RUNNING, 2, Progress.WAITING),  # before a restart applies
        (node("configuring", 2, 1), Target.RUNNING, 2, Progress.WAITING),
        (node("error", 2, 1), Target.RUNNING, 2, Progress.WAITING),  # an old error
        (node("error", 2, 2), Target.RUNNING, 2, Progress.FAILED),
        (node("syncing", 2, 2), Target.RUNNING, 2, Progress.WAITING),
        (node("stopping", 3, 3), Target.STOPPED, 3, Progress.WAITING),
        (node("stopped", 3, 3), Target.STOPPED, 3, Progress.DONE),
        (node("provisioning", 1, None), Target.RUNNING, 1, Progress.WAITING),
        (None, Target.RUNNING, 1, Progress.FAILED),
        (node("deleting", 1, 1), Target.GONE, 1, Progress.WAITING),
        (None, Target.GONE, 1, Progress.DONE),
    ],
)
def test_judge(current: Node | None, target: Target, revision: int, expected: Progress) -> None:
    assert judge(current, target, revision) is expected


def test_build_spec_layers_flags_over_the_file() -> None:
    base = {
        "chain": "litecoin",
        "network": "mainnet",
        "clients": {"node": {"name": "litecoind", "version": "0.21.3"}},
    }
    spec = build_spec(
        base,
        chain=None,
        network="regtest",
        node_type="archive",
        clients=["node=litecoind:0.21.4"],
        override_args=["node=-maxconnections=8", "node=-debug"],
        storage_size="1Ti",
    )
    assert spec == {
        "chain": "litecoin",
        "network": "regtest",
        "nodeType": "archive",
        "clients": {"node": {"name": "litecoind", "version": "0.21.4"}},
        "overrides": {"args": {"node": ["-maxconnections=8", "-debug"]}},
        "storage": {"size": "1Ti"},
    }
    assert base["network"] == "mainnet"  # the caller's document is left alone


@pytest.mark.parametrize(
    "bad", [{"clients": ["node"]}, {"override_args": ["-debug"]}, {"chain": None}]
)
def test_build_spec_refuses_incomplete_flags(bad: dict[str, Any]) -> None:
    flags: dict[str, Any] = {
        "chain": "litecoin",
        "network": "regtest",
        "node_type": None,
        "clients": ["node=litecoind:0.21.4"],
        "override_args": [],
        "storage_size": None,
    }
    with pytest.raises(typer.BadParameter):
        build_spec({}, **(flags | bad))


def test_credentials_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "nodeplane" / "credentials.json"
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        save_credentials(Credentials(url="http://cp:8080", token="nps_x", email="a@b"), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path) == Credentials(url="http://cp:8080", token="nps_x", email="a@b")
    path.write_text("not json")
    assert load_credentials(path) == Credentials()


def test_the_stored_token_goes_only_to_the_stored_url() -> None:
    stored = Credentials(url="http://cp:8080", token="nps_secret")
    assert resolve(None, None, stored).token == "nps_secret"
    assert resolve("http://cp:8080/", None, stored).token == "nps_secret"
    assert resolve("http://other:8080", None, stored) == Credentials(url="http://other:8080")
    assert resolve("http://other:8080", "npk_k", stored) == Credentials(
        url="http://other:8080", token="npk_k"
    )
    assert resolve(None, "npk_k", stored) == Credentials(url="http://cp:8080", token="npk_k")
