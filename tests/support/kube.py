"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on
loopback, started by scripts/kube-testcluster (installed by scripts/install-kube-testcluster.sh).

No kubelet runs: the controller-manager creates Pods and PVCs from StatefulSets and cascades owner
references, but no container starts; a test that needs a running Pod writes its status itself.
"""

import atexit
import base64
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from lightkube import Client, KubeConfig, codecs
from lightkube.resources.core_v1 import Secret

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "scripts" / "kube-testcluster"
CACHE = Path(os.environ.get("KUBE_TESTCLUSTER_CACHE", "/var/cache/kube-testcluster"))
INSTALL_HINT = "run scripts/install-kube-testcluster.sh (./dev test does)"
# etcd listens on the API server's port minus these (see scripts/kube-testcluster).
ETCD_PORT_OFFSETS = (4064, 4063)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """An API server port that is free, with the two etcd ports below it free as well."""
    for _ in range(200):
        port = random.randrange(20000, 60000)
        if all(_port_free(p) for p in (port, *(port - off for off in ETCD_PORT_OFFSETS))):
            return port
    raise RuntimeError("no free port for a test cluster")


class KubeTestCluster:
    """One test cluster in `directory`; `start` returns once the API server is ready."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why a test cluster cannot be started here, or None."""
        for binary in ("kube-apiserver", "kube-controller-manager"):
            if not os.access(CACHE / binary, os.X_OK):
                return f"{CACHE / binary} is missing: {INSTALL_HINT}"
        if shutil.which("etcd") is None:
            return f"etcd is not installed: {INSTALL_HINT}"
        return None

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (a token in group system:masters)."""
        return self.directory / "kubeconfig"

    def start(self) -> None:
        """Start etcd, the API server and the controller-manager."""
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KUBE_TESTCLUSTER_CACHE": str(CACHE)}
        atexit.register(self.stop)  # also when a test session is interrupted
        subprocess.run(
            [str(TOOL), "start", str(self.directory), str(self.port)],
            check=True,
            timeout=120,
            env=env,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop every process and delete the cluster's data; idempotent."""
        subprocess.run([str(TOOL), "stop", str(self.directory)], check=False, timeout=60)

    def client(self) -> Client:
        """A lightkube client with the admin kubeconfig, default namespace `default`."""
        return Client(config=KubeConfig.from_file(self.kubeconfig), field_manager="nodeplane-tests")

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig at `path` that authenticates as ServiceAccount `namespace/account` (with
        a token Secret the controller-manager's token controller fills), not as an admin."""
        admin = self.client()
        secret_name = f"{account}-test-token"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "annotations": {"kubernetes.io/service-account.name": account},
            },
        }
        admin.apply(codecs.from_dict(secret), field_manager="nodeplane-tests", force=True)
        deadline = time.monotonic() + 30
        while True:
            data = admin.get(Secret, secret_name, namespace=namespace).data or {}
            if data.get("token"):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no token for service account {namespace}/{account}")
            time.sleep(0.2)
        token = base64.b64decode(data["token"]).decode()
        config = yaml.safe_load(self.kubeconfig.read_text())
        config["users"] = [{"name": account, "user": {"token": token}}]
        config["contexts"] = [
            {
                "name": account,
                "context": {"cluster": "test", "user": account, "namespace": namespace},
            }
        ]
        config["current-context"] = account
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster."""
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
        )


def cluster_unavailable(reason: str) -> None:
    """Skip when only the fast tests run (./dev test --fast installs no cluster); else fail:
    the full suite installs the cluster, so a missing one is a broken setup, not a reason to skip."""
    if os.environ.get("NODEPLANE_TEST_FAST"):
        pytest.skip(reason)
    pytest.fail(f"Kubernetes test cluster unavailable: {reason}", pytrace=False)
