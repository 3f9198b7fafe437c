"""`nodeplane agent install|status|uninstall` against a sandboxed systemd, and config errors."""

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import wait_for
from tests.support.fleet import Org
from tests.support.sandbox import SystemdSandbox
from tests.support.server import ServerProcess


def nodeplane(sandbox: SystemdSandbox | None, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "nodeplane", *args]
    if sandbox is not None:
        return sandbox.exec(*argv, check=False, timeout=120)
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def write_config(path: Path, server_url: str, key: str, name: str) -> None:
    path.write_text(
        f"""
[agent]
name = "{name}"
data_dir = "{path.parent / "data"}"
driver = "systemd"
unit_dir = "/run/systemd/system"

[control_plane]
url = "{server_url}"
api_key = "{key}"

[intervals]
heartbeat = 1
"""
    )


def test_install_status_uninstall(
    systemd_sandbox: SystemdSandbox, e2e_server: ServerProcess, e2e_org: Org, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    write_config(config, e2e_server.url, e2e_org.executor_key(), "installed-host")

    installed = nodeplane(systemd_sandbox, "agent", "install", "--config", str(config))
    assert installed.returncode == 0, installed.stderr
    try:
        unit = (systemd_sandbox.unit_dir / "nodeplane-agent.service").read_text()
        assert "Restart=on-failure" in unit
        assert f'"{config}"' in unit
        assert (
            systemd_sandbox.systemctl(
                "is-enabled", "nodeplane-agent.service", check=False
            ).stdout.strip()
            == "enabled"
        )

        def online() -> bool:
            executors = e2e_org.owner("{ executors { name status } }")["executors"]
            return any(e["name"] == "installed-host" and e["status"] == "ONLINE" for e in executors)

        wait_for(online, timeout=60, what="installed agent online")

        # A crashed agent is restarted by systemd.
        pid = systemd_sandbox.systemctl(
            "show", "-p", "MainPID", "--value", "nodeplane-agent.service"
        ).stdout.strip()
        systemd_sandbox.systemctl("kill", "--signal=SIGKILL", "nodeplane-agent.service")
        wait_for(
            lambda: (
                systemd_sandbox.systemctl(
                    "show", "-p", "MainPID", "--value", "nodeplane-agent.service"
                ).stdout.strip()
                not in ("0", pid)
            ),
            timeout=30,
            what="agent restarted by systemd",
        )

        status = nodeplane(systemd_sandbox, "agent", "status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        assert "installed-host" in status.stdout and "active" in status.stdout
        assert "reachable" in status.stdout
    finally:
        removed = nodeplane(systemd_sandbox, "agent", "uninstall", "--config", str(config))
    assert removed.returncode == 0, removed.stderr
    assert not (systemd_sandbox.unit_dir / "nodeplane-agent.service").exists()
    state = systemd_sandbox.systemctl(
        "is-active", "nodeplane-agent.service", check=False
    ).stdout.strip()
    assert state in ("inactive", "unknown")


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    missing = nodeplane(None, "agent", "run", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[agent]\nname = "../evil"\ndata_dir = "relative"\n[control_plane]\nurl = "http://x"\n'
    )
    result = nodeplane(None, "agent", "run", "--config", str(bad))
    assert result.returncode == 2
    assert "agent.name" in result.stderr and "agent.data_dir" in result.stderr
    assert "Traceback" not in result.stderr

    not_toml = tmp_path / "not.toml"
    not_toml.write_text("this is = = not toml")
    result = nodeplane(None, "agent", "run", "--config", str(not_toml))
    assert result.returncode == 2 and "not valid TOML" in result.stderr
