"""agent.toml's [ports] section: a port range, both ends or none, in order."""

from pathlib import Path

import pytest

from nodeplane.executor.agent.config import ConfigError, load_config
from nodeplane.executor.agent.port_range import PortRange

BASE = '[control_plane]\nurl = "http://127.0.0.1:8080"\napi_key = "k"\n'


def _config(tmp_path: Path, ports: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + ports)
    return path


def test_no_ports_section_means_no_range(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).ports.port_range() is None


def test_a_range_is_read(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "[ports]\nfirst = 30000\nlast = 30999\n"))
    assert config.ports.port_range() == PortRange(30000, 30999)


@pytest.mark.parametrize(
    ("ports", "problem"),
    [
        ("[ports]\nfirst = 30000\n", "first and last go together"),
        ("[ports]\nfirst = 31000\nlast = 30000\n", "first (31000) is above last (30000)"),
        ("[ports]\nfirst = 80\nlast = 90\n", "ports.first: Input should be greater than or equal"),
        (
            "[ports]\nfirst = 30000\nlast = 70000\n",
            "ports.last: Input should be less than or equal",
        ),
        ('[ports]\nrange = "30000-30999"\n', "ports.range: Extra inputs are not permitted"),
    ],
)
def test_a_bad_range_is_a_config_error_that_says_why(
    tmp_path: Path, ports: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=r"agent\.toml") as raised:
        load_config(_config(tmp_path, ports))
    assert problem in str(raised.value)
