"""agent.toml's [intervals]: the full reconcile of every node is slow by default (drift only),
while the built-in supervisor still looks for ended processes every few seconds."""

from pathlib import Path

import pytest

from nodeplane.executor.agent.config import ConfigError, load_config
from nodeplane.executor.agent.main import intervals_of

BASE = '[control_plane]\nurl = "http://127.0.0.1:8080"\napi_key = "k"\n'


def _intervals(tmp_path: Path, section: str) -> tuple[float, float | None]:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + section)
    intervals = intervals_of(load_config(path))
    return intervals.reconcile, intervals.housekeeping


def test_by_default_nodes_are_reconciled_every_30_s_and_supervised_every_5(
    tmp_path: Path,
) -> None:
    assert _intervals(tmp_path, "") == (30.0, 5.0)


def test_a_short_reconcile_supervises_as_often(tmp_path: Path) -> None:
    assert _intervals(tmp_path, "[intervals]\nreconcile = 1\n") == (1.0, 1.0)


def test_supervise_is_set_on_its_own(tmp_path: Path) -> None:
    assert _intervals(tmp_path, "[intervals]\nreconcile = 60\nsupervise = 2\n") == (60.0, 2.0)


def test_a_supervise_interval_of_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"intervals\.supervise"):
        _intervals(tmp_path, "[intervals]\nsupervise = 0\n")
