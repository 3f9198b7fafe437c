"""A real `nodeplane operator run` process for end-to-end tests (short lease and loop intervals)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class OperatorProcess:
    """One operator replica: its own state directory and log, a shared Lease by name."""

    workdir: Path
    server_url: str
    api_key: str
    kubeconfig: Path
    namespace: str
    name: str = "k8s"
    lease_name: str = "nodeplane-operator"
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        """Where the process writes its log."""
        return self.workdir / "operator.log"

    def log(self) -> str:
        """The log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        """The log's JSON records (other lines skipped)."""
        records = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def instance_id(self) -> str | None:
        """The instance id the process announced, once it did."""
        for record in self.events():
            if record.get("event") == "operator.starting":
                return str(record["instance"])
        return None

    def logged(self, event: str) -> bool:
        """Whether the process logged `event`."""
        return any(record.get("event") == event for record in self.events())

    def _argv(self) -> list[str]:
        key_file = self.workdir / "api-key"
        key_file.write_text(self.api_key)
        key_file.chmod(0o600)
        return [
            sys.executable,
            "-m",
            "nodeplane",
            "operator",
            "run",
            f"--name={self.name}",
            f"--control-plane-url={self.server_url}",
            f"--api-key-file={key_file}",
            f"--kubeconfig={self.kubeconfig}",
            f"--namespace={self.namespace}",
            f"--state-dir={self.workdir / 'state'}",
            f"--lease-name={self.lease_name}",
            "--lease-duration=3",
            "--lease-renew-deadline=2",
            "--lease-retry=0.3",
            "--heartbeat=1",
            "--reconcile=1",
            "--report=1",
            "--metrics-interval=1",
            "--resync=5",
            "--log-format=json",
        ]

    def start(self) -> None:
        """Start (or start again) the process."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self._argv(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL it (no Lease release, no cleanup: a crash)."""
        if self.popen is not None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)
            self.popen = None

    def stop(self) -> None:
        """SIGTERM it and wait (it releases the Lease)."""
        if self.popen is not None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
            self.popen = None
