"""The README's operator section, followed as written on the test cluster: the overlay its shell
block makes, `kubectl apply -k .`, and `nodeplane operator status`."""

import base64
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from lightkube import Client
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Secret

from tests.support.kube import KubeTestCluster

REPO = Path(__file__).resolve().parents[2]


def operator_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Running the operator on Kubernetes")
    return text[start : text.index("\n## ", start + 1)]


def shell_block(section: str) -> str:
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match is not None, "the operator section has a shell block"
    return textwrap.dedent(match.group(1))


def test_the_readme_operator_section_works_as_written(
    kube_cluster: KubeTestCluster, kube: Client, tmp_path: Path
) -> None:
    section = operator_section()
    # The README's layout: the overlay directory beside a checkout called `nodeplane`.
    (tmp_path / "nodeplane").symlink_to(REPO)
    key = "npx_readme_test_key"
    env = {**os.environ, "EXECUTOR_KEY": key, "KUBECONFIG": str(kube_cluster.kubeconfig)}
    subprocess.run(["bash", "-euc", shell_block(section)], cwd=tmp_path, env=env, check=True)
    overlay = tmp_path / "my-operator"
    assert (overlay / "api-key").read_text() == key

    assert "`kubectl apply -k .`" in section
    applied = subprocess.run(
        ["kubectl", "apply", "-k", "."], cwd=overlay, env=env, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    secret = kube.get(Secret, "nodeplane-operator-key", namespace="nodeplane-system")
    assert base64.b64decode(secret.data["api-key"]).decode() == key
    deployment = kube.get(Deployment, "nodeplane-operator", namespace="nodeplane-system")
    (container,) = deployment.spec.template.spec.containers
    config_name = container.envFrom[0].configMapRef.name
    config = kube.get(ConfigMap, config_name, namespace="nodeplane-system")
    assert config.data == {
        "NODEPLANE_CONTROL_PLANE_URL": "https://nodeplane.example.com",
        "NODEPLANE_EXECUTOR_NAME": "cluster-1",
    }

    assert "`nodeplane operator status -n nodeplane-system`" in section
    status = subprocess.run(
        [sys.executable, "-m", "nodeplane", "operator", "status", "-n", "nodeplane-system"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stderr
    assert "namespace nodeplane-system" in status.stdout
